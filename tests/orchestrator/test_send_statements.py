"""One API send in a handful of statements, and the settings snapshot every send reads (issue 10)."""

import psycopg
import pytest
from django.db import connection

from channels_app.models import ChannelPolicy
from governor.models import CapRule
from orchestrator.models import IdempotencyKey, Message
from orchestrator.snapshot import settings_version_read

from .factories import ReachableRecipientFactory

URL = "/api/v1/messages/"
ENGAGEMENT = {"recipient": "m1", "channel": "email", "purpose": "engagement"}
ENGAGEMENT["content"] = {"subject": "New for you", "body": "Three things we think you will like."}

# The token with its account's permissions; the recipient by external id, locked and read with their
# reachability, opt-out and the settings version; the window count; the insert; plus the request's own
# transaction (here a savepoint and its release inside the test's transaction). Before issue 10: 13.
MAX_STATEMENTS = 6


def send(api, **extra):
    return api.post(URL, ENGAGEMENT, format="json", **extra)


@pytest.mark.django_db
def test_an_api_send_takes_a_bounded_handful_of_statements(api, django_assert_max_num_queries):
    ReachableRecipientFactory(external_id="m1")
    assert send(api).status_code == 201  # warm: the token's last use, the settings snapshot
    with django_assert_max_num_queries(MAX_STATEMENTS) as captured:
        resp = send(api)
    assert resp.status_code == 201, resp.json()
    sql = [q["sql"] for q in captured.captured_queries]
    assert sum(s.startswith("SAVEPOINT") for s in sql) == 1  # the request's transaction; none on the path
    assert not any("idempotencykey" in s for s in sql)  # no key, no record
    assert sum("FOR UPDATE" in s for s in sql) == 1
    assert not any(s.startswith("SELECT version") for s in sql)  # it rode along with the lock


@pytest.mark.django_db
def test_the_idempotency_record_is_written_only_with_a_key(api):
    ReachableRecipientFactory(external_id="m1")
    assert send(api).status_code == 201
    assert not IdempotencyKey.objects.exists()
    first = send(api, HTTP_IDEMPOTENCY_KEY="k-1")
    again = send(api, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again["Idempotent-Replayed"] == "true"
    assert IdempotencyKey.objects.count() == 1 and Message.objects.count() == 2


def other_connection() -> psycopg.Connection:
    """A second connection to the test database, as another process or a psql session would have."""
    s = connection.settings_dict
    return psycopg.connect(
        dbname=s["NAME"],
        host=s["HOST"] or None,
        port=s["PORT"] or None,
        user=s["USER"] or None,
        password=s["PASSWORD"] or None,
        autocommit=True,
    )


@pytest.mark.django_db(transaction=True)
def test_a_cap_edited_by_raw_sql_elsewhere_is_seen_by_the_very_next_send(api):
    ReachableRecipientFactory(external_id="m1")
    assert send(api).json()["status"] == "accepted"  # 1 of the default 3 a day: the snapshot is loaded
    with other_connection() as other:
        other.execute('UPDATE governor_caprule SET "limit" = 1')  # no signal: the trigger bumps the version
    resp = send(api)
    assert resp.json()["status"] == "deferred", resp.json()


@pytest.mark.django_db(transaction=True)
def test_a_channel_policy_saved_through_the_orm_is_seen_by_the_very_next_send(api):
    ReachableRecipientFactory(external_id="m1")
    assert send(api).status_code == 201
    policy = ChannelPolicy.objects.get(channel="email")
    policy.allowed_purposes = ["transactional", "alert"]
    policy.save()
    resp = send(api)
    assert resp.status_code == 400, resp.json()


@pytest.mark.django_db(transaction=True)
def test_bulk_and_raw_edits_of_the_settings_bump_the_version():
    before = settings_version_read()
    CapRule.objects.update(enabled=True)  # QuerySet.update sends no signal
    after_update = settings_version_read()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE channels_app_channelpolicy SET job = job")
    after_raw = settings_version_read()
    assert before != after_update != after_raw


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_edit_never_leaves_its_version_to_a_later_one():
    from django.db import transaction

    before = settings_version_read()
    with transaction.atomic():
        CapRule.objects.update(enabled=False)
        rolled_back = settings_version_read()
        transaction.set_rollback(True)
    assert settings_version_read() == before
    CapRule.objects.update(enabled=True)
    assert settings_version_read() not in (before, rolled_back)


def _direct_decision(recipient, at):
    """One decision through the governor alone, as a direct caller (no request, no held lock)."""
    from governor.services import MessageDraft, message_decide

    draft = MessageDraft(
        recipient_id=recipient.pk, channel="email", purpose="engagement", content=ENGAGEMENT["content"]
    )
    return message_decide(draft=draft, at=at)


@pytest.mark.django_db
def test_a_direct_decision_reads_the_settings_version_with_its_lock(django_assert_max_num_queries):
    from django.utils import timezone

    recipient = ReachableRecipientFactory()
    _direct_decision(recipient, timezone.now())  # warm: the settings snapshot is loaded
    # Its savepoint and release (inside the test's transaction), the lock, the count, the insert.
    with django_assert_max_num_queries(5) as captured:
        _direct_decision(recipient, timezone.now())
    sql = [q["sql"] for q in captured.captured_queries]
    assert not any(s.startswith("SELECT (SELECT version") for s in sql)  # no statement of its own
    assert [s for s in sql if "FOR UPDATE" in s] == [s for s in sql if "settingsversion" in s]
    with connection.cursor() as cursor:  # the hot path's statements are prepared once per connection
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%FOR UPDATE%'")
        assert cursor.fetchone()[0] >= 1


@pytest.mark.django_db(transaction=True)
def test_a_cap_edited_by_raw_sql_elsewhere_is_seen_by_the_very_next_direct_decision():
    from datetime import timedelta

    from django.utils import timezone

    recipient = ReachableRecipientFactory()
    now = timezone.now()
    assert _direct_decision(recipient, now).status == "accepted"  # 1 of 3: the snapshot is loaded
    with other_connection() as other:
        other.execute('UPDATE governor_caprule SET "limit" = 1')  # no signal: the trigger bumps the version
    later = _direct_decision(recipient, now + timedelta(seconds=1))
    assert later.status == "deferred", later.reason
