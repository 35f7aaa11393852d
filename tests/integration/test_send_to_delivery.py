"""The whole spine for one recipient: pipeline, governor (defer, re-drive), delivery, on a moving clock."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from governor.models import CapRule
from orchestrator.models import Message, MessageStatus
from orchestrator.pipeline import message_send
from orchestrator.work import due_work_run
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def email(n: int) -> dict:
    return {"subject": f"Digest {n}", "body": "What happened this week, in some depth."}


def test_capped_email_waits_for_its_slot_then_is_delivered_once(django_capture_on_commit_callbacks):
    assert CapRule.objects.filter(enabled=True).exists(), "the default governor is installed by migration"
    recipient = ReachableRecipientFactory(external_id="spine-1", timezone="UTC")
    sent = []
    for n in range(4):
        with django_capture_on_commit_callbacks(execute=True):
            sent.append(
                message_send(
                    recipient=recipient,
                    channel="email",
                    purpose="engagement",
                    content=email(n),
                    at=NOON + timedelta(minutes=n),
                )
            )
    assert [m.status for m in sent[:3]] == [MessageStatus.ACCEPTED] * 3
    fourth = Message.objects.get(pk=sent[3].pk)
    assert fourth.status == MessageStatus.DEFERRED
    assert "3 of 3" in fourth.reason
    assert fourth.deliver_after == NOON + timedelta(hours=24)
    # The three accepted ones reached the SMTP backend (locmem in tests); the deferred one did not.
    assert sorted(m.subject for m in mail.outbox) == ["Digest 0", "Digest 1", "Digest 2"]

    # Nothing is due before the slot frees.
    with django_capture_on_commit_callbacks(execute=True):
        due_work_run(now=NOON + timedelta(hours=23, minutes=59))
    assert Message.objects.get(pk=fourth.pk).status == MessageStatus.DEFERRED

    # When it frees, the re-drive accepts it and the channel delivers it, once, even if the pass repeats.
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            due_work_run(now=NOON + timedelta(hours=24, seconds=1))
    fourth.refresh_from_db()
    assert fourth.status == MessageStatus.SENT, (fourth.status, fourth.last_error)
    assert fourth.accepted_at == NOON + timedelta(hours=24, seconds=1)
    assert [m.subject for m in mail.outbox].count("Digest 3") == 1
    assert fourth.delivery_attempts.count() == 1


def test_transactional_sms_is_never_capped_or_held_by_quiet_hours(django_capture_on_commit_callbacks):
    recipient = ReachableRecipientFactory(external_id="spine-2", timezone="Europe/Paris")
    # 23:30 in Paris (summer) or 22:30 (winter): inside quiet hours either way. In the future, because
    # delivery reads the real clock and SMS carries a default shelf life from `at`.
    late_evening = (timezone.now() + timedelta(days=1)).replace(hour=21, minute=30, second=0, microsecond=0)
    statuses = []
    for n in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            m = message_send(
                recipient=recipient,
                channel="sms",
                purpose="transactional",
                content={"body": f"Your code is 42{n}1."},
                at=late_evening + timedelta(minutes=n),
            )
        statuses.append(Message.objects.get(pk=m.pk).status)
    assert statuses == [MessageStatus.SENT] * 5
