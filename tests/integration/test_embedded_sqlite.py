"""`make run` promises the embedded SQLite default works: migrate, seed the demo, send, deliver, run due work.

The suite runs on PostgreSQL; this drives the same code on a throwaway SQLite file in subprocesses
(tasks inline with Q_SYNC), so PostgreSQL-only SQL cannot creep into the default setup unnoticed.
"""

import json

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


RECORD_AND_OVERVIEW = """
from datetime import timedelta
from django.utils import timezone
from governor.selectors import around_us
from orchestrator.pipeline import message_send
from orchestrator.recording import message_record, record_request_parse
from orchestrator.services import recipient_upsert

now = timezone.now()
r = recipient_upsert(external_id="around-1", timezone_name="UTC", email="a@example.com").recipient
for n in range(3):
    body = {"recipient": "around-1", "channel": "email", "purpose": "engagement",
            "sent_at": now - timedelta(seconds=30 - n), "source_system": "esp", "external_id": f"x{n}",
            "content": {"body": "no subject"}}
    message_record(request=record_request_parse(body, now=now), at=now)
again = message_record(request=record_request_parse(body, now=now), at=now)
m = message_send(recipient=r, channel="email", purpose="engagement",
                 content={"subject": "Hi", "body": "Hello"}, at=now)
(esp,) = [a for a in around_us(now=now, since=now - timedelta(hours=1), spent=3) if a.system == "esp"]
print("AROUND", m.status, m.rule, again[1], esp.recorded, esp.deferred, esp.broke, esp.codes)
"""


@pytest.mark.slow
def test_recorded_history_works_on_the_embedded_sqlite(tmp_path):
    """Recording, the import (re-run included) and the governor's "around us" on SQLite."""
    manage = sqlite_manage(tmp_path / "history.sqlite3")
    manage("migrate", "--noinput", "-v0")
    out = manage("shell", "-c", RECORD_AND_OVERVIEW)
    assert "AROUND deferred Engagement + promotional, 24 h False 3 1 3 [('email_no_subject', 3)]" in out
    rows = tmp_path / "h.jsonl"
    row = {
        "channel": "push",
        "purpose": "engagement",
        "sent_at": "2025-01-05T10:00:00Z",
        "source_system": "braze",
    }
    rows.write_text(
        json.dumps({**row, "recipient": "around-1", "external_id": "p1"})
        + "\n"
        + json.dumps({**row, "recipient": "nobody", "external_id": "p2"})
        + "\n"
    )
    assert "2 rows: 1 recorded, 0 already recorded (skipped), 1 bad" in manage(
        "history_import", str(rows), "--no-progress"
    )
    assert "2 rows: 0 recorded, 1 already recorded (skipped), 1 bad" in manage(
        "history_import", str(rows), "--no-progress"
    )
