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

# The authority features on SQLite: the review's forecast (window functions, the row stream), the
# control room and the audit log, as the demo's messaging-team member sees them.
REVIEW_AND_HOME = """
from django.contrib.auth import get_user_model
from django.test import Client
from journeys.models import Journey

client = Client()
client.force_login(get_user_model().objects.get(username="team"))
journey = Journey.objects.get(slug="browse-abandon")
pages = ["/admin/", f"/admin/journeys/journey/{journey.pk}/review/", "/admin/orchestrator/auditlog/"]
print("PAGES", [client.get(page, HTTP_HOST="127.0.0.1").status_code for page in pages])
"""


@pytest.mark.slow
def test_the_embedded_sqlite_default_runs_the_whole_spine(tmp_path):
    manage = sqlite_manage(tmp_path / "demo.sqlite3")
    manage("migrate", "--noinput", "-v0")
    assert "Demo ready." in manage("seed_demo", "--no-progress", "--recipients", "6")
    assert "STATUS sent 1" in manage("shell", "-c", SEND_AND_CHECK)
    assert "PAGES [200, 200, 200]" in manage("shell", "-c", REVIEW_AND_HOME)
    manage("orchestrate", "--once")
    assert "Demo ready." in manage("seed_demo", "--no-progress", "--recipients", "6")  # idempotent
