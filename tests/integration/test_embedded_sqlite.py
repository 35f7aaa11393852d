"""`make run` promises the embedded SQLite default works: migrate, seed the demo, send, deliver, run due work.

The suite runs on PostgreSQL; this drives the same code on a throwaway SQLite file in subprocesses
(tasks inline with Q_SYNC), so PostgreSQL-only SQL cannot creep into the default setup unnoticed.
"""

import pytest

from tests.integration.sqlite import sqlite_manage

SEND_AND_CHECK = """
from orchestrator.models import Message
from orchestrator.pipeline import message_send
from orchestrator.services import recipient_upsert

r = recipient_upsert(external_id="sqlite-1", timezone_name="UTC", email="s@example.com").recipient
m = message_send(recipient=r, channel="email", purpose="transactional",
                 content={"subject": "Receipt", "body": "Thanks."})
m.refresh_from_db()
print("STATUS", m.status, m.delivery_attempts.count())
"""


@pytest.mark.slow
def test_the_embedded_sqlite_default_runs_the_whole_spine(tmp_path):
    manage = sqlite_manage(tmp_path / "demo.sqlite3")
    manage("migrate", "--noinput", "-v0")
    assert "Demo ready." in manage("seed_demo", "--no-progress", "--recipients", "6")
    assert "STATUS sent 1" in manage("shell", "-c", SEND_AND_CHECK)
    manage("orchestrate", "--once")
    assert "Demo ready." in manage("seed_demo", "--no-progress", "--recipients", "6")  # idempotent
