"""Delivery: claim → provider call → record; retries with backoff, the dead letter, the sweeper."""

from datetime import timedelta

import pytest
from django.utils import timezone

from channels_app import delivery
from channels_app.backends import SendResult, push, sms
from channels_app.delivery import (
    deliveries_sweep,
    delivery_claim,
    delivery_record,
    message_deliver,
    message_delivery_retry,
    messages_deliver_enqueue,
    retry_delay,
)
from channels_app.models import AttemptOutcome, DeliveryAttempt
from orchestrator.models import Channel, ContactPoint, Message, MessageStatus
from orchestrator.signals import message_status_changed

from .factories import AcceptedMessageFactory

pytestmark = pytest.mark.django_db

# The scripted backend's answers, consumed in order (shared with ScriptedBackend).
SCRIPT: list[SendResult] = []
CALLS: list[int] = []


class ScriptedBackend:
    name = "scripted"

    def send(self, outgoing):
        CALLS.append(outgoing.message_id)
        return SCRIPT.pop(0) if SCRIPT else SendResult.success("ok-1")


@pytest.fixture(autouse=True)
def scripted(settings):
    SCRIPT.clear()
    CALLS.clear()
    sms.outbox.clear()
    push.outbox.clear()
    settings.CHANNELS = {
        **settings.CHANNELS,
        "BACKENDS": {**settings.CHANNELS["BACKENDS"], "sms": f"{__name__}.ScriptedBackend"},
        "RETRY_MAX_ATTEMPTS": 3,
        "RETRY_BASE_DELAY": timedelta(seconds=10),
        "RETRY_MAX_DELAY": timedelta(seconds=60),
        "RETRY_JITTER": 0.0,
    }


def sms_message(**kw):
    return AcceptedMessageFactory(channel=Channel.SMS, **kw)


def test_success_marks_sent_with_the_provider_id_and_one_attempt():
    m = sms_message()
    now = timezone.now()
    message_deliver(message_id=m.pk, now=now)
    m.refresh_from_db()
    assert (m.status, m.sent_at, m.provider, m.provider_message_id) == ("sent", now, "scripted", "ok-1")
    assert m.next_attempt_at is None and m.attempts == 1
    [a] = m.delivery_attempts.all()
    assert (a.outcome, a.number, a.started_at, a.finished_at) == ("success", 1, now, now)


def test_a_second_run_of_the_task_is_a_no_op():
    m = sms_message()
    message_deliver(message_id=m.pk)
    assert message_deliver(message_id=m.pk) is None
    assert [m.pk] == CALLS and m.delivery_attempts.count() == 1


def test_a_duplicate_task_during_the_call_finds_the_claim_and_does_nothing():
    m = sms_message()
    now = timezone.now()
    claim = delivery_claim(message_id=m.pk, now=now)
    assert claim is not None
    assert delivery_claim(message_id=m.pk, now=now + timedelta(seconds=5)) is None
    delivery_record(claim=claim, result=SendResult.success("x"), now=now)
    assert Message.objects.get(pk=m.pk).status == "sent"


def test_transient_errors_retry_with_exponential_backoff_then_fail(settings):
    m = sms_message()
    SCRIPT.extend([SendResult.transient("HTTP 503")] * 3)
    t0 = timezone.now()
    message_deliver(message_id=m.pk, now=t0)
    m.refresh_from_db()
    assert m.status == "accepted" and m.next_attempt_at == t0 + timedelta(seconds=10)
    assert m.last_error == "HTTP 503"
    # Not due yet: an early duplicate does nothing.
    assert message_deliver(message_id=m.pk, now=t0 + timedelta(seconds=5)) is None
    t1 = t0 + timedelta(seconds=10)
    message_deliver(message_id=m.pk, now=t1)
    m.refresh_from_db()
    assert m.next_attempt_at == t1 + timedelta(seconds=20)
    message_deliver(message_id=m.pk, now=t1 + timedelta(seconds=20))
    m.refresh_from_db()
    assert m.status == "failed" and m.failed_at is not None and m.next_attempt_at is None
    assert m.last_error.startswith("Gave up after 3 attempts") and "HTTP 503" in m.last_error
    assert [a.outcome for a in m.delivery_attempts.all()] == ["transient"] * 3
    # A failed message is never retried again by a stray task.
    assert message_deliver(message_id=m.pk, now=t1 + timedelta(hours=1)) is None
    assert len(CALLS) == 3


def test_a_permanent_error_fails_at_once_with_the_error():
    m = sms_message()
    SCRIPT.append(SendResult.permanent("HTTP 400: not a mobile number"))
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "failed" and m.last_error == "HTTP 400: not a mobile number" and m.attempts == 1


def test_retry_delay_grows_exponentially_with_jitter_and_a_cap(settings):
    settings.CHANNELS = {**settings.CHANNELS, "RETRY_JITTER": 0.2}
    delays = [retry_delay(attempts=n).total_seconds() for n in range(1, 8)]
    for n, d in enumerate(delays, start=1):
        nominal = min(10 * 2 ** (n - 1), 60)
        assert 0.8 * nominal <= d <= 1.2 * nominal


def test_the_shipped_schedule_is_about_eight_tries_over_thirty_minutes():
    from orchestrator import settings as shipped

    c = shipped.CHANNELS
    total = sum(
        min(c["RETRY_BASE_DELAY"] * 2 ** (n - 1), c["RETRY_MAX_DELAY"]).total_seconds()
        for n in range(1, c["RETRY_MAX_ATTEMPTS"])
    )
    assert c["RETRY_MAX_ATTEMPTS"] == 8 and 25 * 60 <= total <= 35 * 60


def test_a_backend_that_raises_counts_as_transient():
    class Boom:
        name = "boom"

        def send(self, outgoing):
            raise RuntimeError("kaboom")

    m = sms_message()
    from unittest import mock

    from channels_app.providers import ProviderSpec

    with mock.patch.object(ProviderSpec, "backend", return_value=Boom()):
        message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "accepted" and "kaboom" in m.last_error


def test_a_claim_older_than_the_lease_is_taken_over():
    m = sms_message()
    t0 = timezone.now()
    assert delivery_claim(message_id=m.pk, now=t0) is not None  # the worker then dies
    lease = delivery.conf("DELIVERY_LEASE")
    assert message_deliver(message_id=m.pk, now=t0 + lease - timedelta(seconds=1)) is None
    assert deliveries_sweep(now=t0 + lease - timedelta(seconds=1), limit=10) == 0
    assert deliveries_sweep(now=t0 + lease + timedelta(seconds=1), limit=10) == 1  # the sweeper finds it
    message_deliver(message_id=m.pk, now=t0 + lease + timedelta(seconds=1))
    m.refresh_from_db()
    assert m.status == "sent"
    first, second = m.delivery_attempts.all()
    assert first.outcome == "transient" and "lease" in first.response and second.outcome == "success"


def test_an_expired_message_is_not_sent():
    m = sms_message(expires_at=timezone.now() - timedelta(minutes=1))
    assert message_deliver(message_id=m.pk) is None
    m.refresh_from_db()
    assert m.status == "expired" and m.expired_at is not None and CALLS == []


def test_a_recipient_without_the_contact_point_any_more_fails_cleanly():
    m = sms_message()
    ContactPoint.objects.filter(recipient=m.recipient, channel="sms").delete()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "failed" and "no opted-in sms contact point" in m.last_error and CALLS == []


def test_the_named_contact_point_is_used():
    m = AcceptedMessageFactory(channel=Channel.PUSH)
    ContactPoint.objects.create(recipient=m.recipient, channel="push", address="second-token")
    Message.objects.filter(pk=m.pk).update(to_address=f"token-{m.recipient.external_id}")
    message_deliver(message_id=m.pk)
    assert push.outbox[0]["to"] == f"token-{m.recipient.external_id}"


def test_status_changes_send_message_status_changed():
    seen = []

    def listener(sender, message, previous, **kw):
        seen.append((previous, message.status))

    message_status_changed.connect(listener)
    try:
        message_deliver(message_id=sms_message().pk)
    finally:
        message_status_changed.disconnect(listener)
    assert seen == [("accepted", "sent")]


def test_the_sweeper_redrives_lost_tasks_and_due_retries_once(django_capture_on_commit_callbacks):
    now = timezone.now()
    lost = sms_message(accepted_at=now - timedelta(minutes=10))
    fresh = sms_message(accepted_at=now)  # its task is still on its way
    due = sms_message(accepted_at=now - timedelta(hours=1))
    Message.objects.filter(pk=due.pk).update(next_attempt_at=now - timedelta(seconds=1))
    later = sms_message(accepted_at=now - timedelta(hours=1))
    Message.objects.filter(pk=later.pk).update(next_attempt_at=now + timedelta(minutes=5))
    sent = sms_message(status=MessageStatus.SENT, accepted_at=now - timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep(now=now, limit=100) == 2
    assert sorted(CALLS) == sorted([lost.pk, due.pk])
    # A second pass finds nothing new: the re-driven ones were pushed ahead (and are sent now).
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep(now=now, limit=100) == 0
    assert Message.objects.get(pk=fresh.pk).status == "accepted"
    assert Message.objects.get(pk=sent.pk).attempts == 0


def test_the_sweeper_works_in_batches():
    now = timezone.now()
    for _ in range(5):
        sms_message(accepted_at=now - timedelta(hours=1))
    assert deliveries_sweep(now=now, limit=3) == 3
    assert deliveries_sweep(now=now, limit=3) == 2


def test_the_sweeper_is_registered_as_due_work():
    from django.conf import settings

    assert "channels_app.delivery.deliveries_sweep" in settings.ORCHESTRATOR["DUE_WORK"]


def test_batch_enqueue_makes_few_tasks(settings, monkeypatch):
    settings.CHANNELS = {**settings.CHANNELS, "TASK_BATCH_SIZE": 50}
    tasks = []
    monkeypatch.setattr(delivery, "async_task", lambda func, ids, **kw: tasks.append(ids))
    messages_deliver_enqueue(message_ids=range(120))
    assert [len(t) for t in tasks] == [50, 50, 20]


def test_a_message_accepted_later_is_delivered_on_commit(django_capture_on_commit_callbacks):
    """The governor's re-drive of a deferred message announces it with message_status_changed."""
    m = sms_message(status=MessageStatus.DEFERRED)
    with django_capture_on_commit_callbacks(execute=True):
        m.status = MessageStatus.ACCEPTED
        m.save()
        message_status_changed.send(sender=Message, message=m, previous=MessageStatus.DEFERRED)
    assert [m.pk] == CALLS and Message.objects.get(pk=m.pk).status == "sent"


def test_retry_now_requeues_a_dead_letter_with_a_fresh_budget(django_capture_on_commit_callbacks):
    m = sms_message()
    SCRIPT.extend([SendResult.permanent("nope")])
    message_deliver(message_id=m.pk)
    accepted_at = Message.objects.get(pk=m.pk).accepted_at
    with django_capture_on_commit_callbacks(execute=True):
        message_delivery_retry(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "sent" and m.accepted_at == accepted_at
    assert [a.number for a in m.delivery_attempts.all()] == [1, 2]
    with pytest.raises(ValueError):
        message_delivery_retry(message_id=m.pk)


def test_a_receipt_that_beats_the_record_keeps_its_status():
    from channels_app.services import message_receipt_apply

    m = sms_message()
    now = timezone.now()
    claim = delivery_claim(message_id=m.pk, now=now)
    message_receipt_apply(message_id=m.pk, type="delivered", occurred_at=now)
    delivery_record(claim=claim, result=SendResult.success("SM1"), now=now)
    m.refresh_from_db()
    assert m.status == "delivered" and m.sent_at == now and m.provider_message_id == "SM1"
    assert DeliveryAttempt.objects.get().outcome == AttemptOutcome.SUCCESS


def test_a_batch_record_moves_only_the_messages_still_accepted():
    """The set-based record writes a move only where the message is still accepted: one a receipt got
    to first keeps its status (and gets the provider's id), the others become sent, each announced."""
    from channels_app.providers import ChainOutcome, ProviderTry
    from channels_app.services import message_receipt_apply

    first, second = sms_message(), sms_message()
    now = timezone.now()
    claims = delivery.deliveries_claim(message_ids=[first.pk, second.pk], now=now)
    message_receipt_apply(message_id=first.pk, type="delivered", occurred_at=now)
    heard = []

    def listener(sender, message, previous, **kwargs):
        heard.append((message.pk, previous, message.status, message.source))

    message_status_changed.connect(listener)
    try:
        outcomes = [
            (c, ChainOutcome(r, c.provider, [ProviderTry(c.provider, r, now, now)], []))
            for c, r in ((c, SendResult.success(f"SM{c.outgoing.message_id}")) for c in claims)
        ]
        assert delivery.deliveries_record(outcomes=outcomes, now=now) == 2
    finally:
        message_status_changed.disconnect(listener)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == "delivered" and first.provider_message_id == f"SM{first.pk}"
    assert second.status == "sent" and second.sent_at == now
    assert second.provider_message_id == f"SM{second.pk}"
    assert heard == [(second.pk, "accepted", "sent", second.source)]
    assert [a.outcome for a in DeliveryAttempt.objects.order_by("message_id")] == ["success", "success"]


def test_a_backend_that_cannot_be_loaded_ends_in_the_dead_letter_not_lost(settings):
    settings.CHANNELS = {
        **settings.CHANNELS,
        "BACKENDS": {**settings.CHANNELS["BACKENDS"], "sms": "no.such.Backend"},
        "RETRY_MAX_ATTEMPTS": 1,
    }
    m = sms_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "failed" and "no.such" in m.provider and "ModuleNotFoundError" in m.last_error


def test_orchestrate_once_runs_the_sweeper(django_capture_on_commit_callbacks):
    from django.core.management import call_command

    m = sms_message(accepted_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("orchestrate", "--once")
    assert Message.objects.get(pk=m.pk).status == "sent"


def test_a_lost_last_attempt_is_not_followed_by_one_more_than_configured():
    m = sms_message()
    Message.objects.filter(pk=m.pk).update(attempts=2)
    t0 = timezone.now()
    assert delivery_claim(message_id=m.pk, now=t0) is not None  # attempt 3 of 3; the worker dies
    later = t0 + delivery.conf("DELIVERY_LEASE") + timedelta(seconds=1)
    assert message_deliver(message_id=m.pk, now=later) is None
    m.refresh_from_db()
    assert m.status == "failed" and m.last_error.startswith("Gave up after 3 attempts") and CALLS == []
