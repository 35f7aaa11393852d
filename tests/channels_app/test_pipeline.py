"""The send pipeline's channel part: lint refusals and warnings, shelf life, delivery on commit."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from channels_app.backends import sms
from channels_app.models import AttemptOutcome, DeliveryAttempt
from orchestrator.models import Message, MessageStatus
from orchestrator.pipeline import SendRefused, message_send
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/"


@pytest.fixture(autouse=True)
def _empty_outboxes():
    sms.outbox.clear()


def send(api, **body):
    payload = {"recipient": "p1", "channel": "email", "purpose": "transactional", **body}
    return api.post(URL, payload, format="json")


@pytest.mark.parametrize(
    "body,code",
    [
        ({"channel": "email", "content": {"body": "No subject"}}, "email_no_subject"),
        ({"channel": "sms", "purpose": "promotional", "content": {"body": "We miss you"}}, "sms_purpose"),
        (
            {"channel": "sms", "content": {"body": "Confirmed. 50% off everything, big sale!"}},
            "sms_looks_like_marketing",
        ),
        ({"channel": "push", "content": {"title": "t", "body": " ".join(["w"] * 212)}}, "push_too_long"),
        ({"channel": "in_app", "content": {"title": "t", "body": "b"}}, "in_app_no_context"),
        (
            {
                "channel": "push",
                "content": {"title": "t", "body": "b", "action_url": "app://a", "actions": ["app://b"]},
            },
            "push_multiple_actions",
        ),
    ],
)
def test_blocking_lint_is_a_400_with_the_code_and_writes_nothing(api, body, code):
    ReachableRecipientFactory(external_id="p1")
    resp = send(api, **body)
    assert resp.status_code == 400, resp.json()
    assert code in resp.json()["codes"]
    assert resp.json()["content"]  # the plain-language reason
    assert not Message.objects.exists()


def test_warnings_are_recorded_on_the_message(api):
    ReachableRecipientFactory(external_id="p1")
    resp = send(api, channel="push", content={"body": "Your driver is here."})
    assert resp.status_code == 201, resp.json()
    codes = {w["code"] for w in Message.objects.get().warnings}
    assert codes == {"push_no_title", "push_no_action"}
    assert {w["code"] for w in resp.json()["warnings"]} == codes


def test_push_gets_the_policy_ttl_when_the_caller_gives_none(api):
    ReachableRecipientFactory(external_id="p1")
    before = timezone.now()
    resp = send(api, channel="push", content={"title": "Driver", "body": "Here.", "action_url": "app://r"})
    expires = parse_datetime(resp.json()["expires_at"])
    assert before + timedelta(hours=4) <= expires <= timezone.now() + timedelta(hours=4)


def test_the_callers_expiry_wins_and_email_never_expires_by_default():
    recipient = ReachableRecipientFactory()
    at = timezone.now()
    push = message_send(
        recipient=recipient,
        channel="push",
        purpose="alert",
        content={"title": "t", "body": "b", "action_url": "app://x"},
        expires_at=at + timedelta(minutes=5),
        at=at,
    )
    assert push.expires_at == at + timedelta(minutes=5)
    email = message_send(
        recipient=recipient, channel="email", purpose="transactional", content={"subject": "s", "body": "b"}
    )
    assert email.expires_at is None


def test_shelf_life_counts_from_deliver_after():
    recipient = ReachableRecipientFactory(timezone="UTC")
    at = datetime(2026, 6, 10, 6, 0, tzinfo=UTC)  # the requested 16:00 is outside quiet hours
    later = at + timedelta(hours=10)
    m = message_send(
        recipient=recipient,
        channel="push",
        purpose="engagement",
        content={"title": "t", "body": "b", "action_url": "app://x"},
        deliver_after=later,
        at=at,
    )
    assert m.expires_at == later + timedelta(hours=4)


def test_refusal_raises_send_refused_with_codes():
    recipient = ReachableRecipientFactory()
    with pytest.raises(SendRefused) as exc:
        message_send(recipient=recipient, channel="sms", purpose="promotional", content={"body": "Sale!"})
    assert {e["code"] for e in exc.value.errors["content"]} == {"sms_purpose"}


def test_an_accepted_message_is_delivered_after_commit(api, django_capture_on_commit_callbacks):
    ReachableRecipientFactory(external_id="p1")
    with django_capture_on_commit_callbacks(execute=True):
        resp = send(api, channel="sms", content={"body": "Your code is 428193."})
    assert resp.status_code == 201
    message = Message.objects.get()
    assert message.status == MessageStatus.SENT and message.sent_at is not None
    assert message.provider == "sms:locmem" and message.provider_message_id == sms.outbox[0]["sid"]
    [attempt] = DeliveryAttempt.objects.all()
    assert attempt.outcome == AttemptOutcome.SUCCESS and attempt.number == 1
    assert [m["message_id"] for m in sms.outbox] == [message.pk]


def test_nothing_is_enqueued_when_the_transaction_rolls_back(django_capture_on_commit_callbacks):
    recipient = ReachableRecipientFactory()
    with django_capture_on_commit_callbacks() as callbacks:
        message_send(recipient=recipient, channel="sms", purpose="transactional", content={"body": "Code 1"})
    assert len(callbacks) == 1  # enqueue waits for the commit; a rollback drops it
    assert sms.outbox == []


def test_a_broken_broker_never_loses_an_accepted_message(
    api, monkeypatch, django_capture_on_commit_callbacks
):
    from channels_app import delivery

    ReachableRecipientFactory(external_id="p1")

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(delivery, "async_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        resp = send(api, channel="sms", content={"body": "Your code is 428193."})
    assert resp.status_code == 201
    message = Message.objects.get()
    assert message.status == MessageStatus.ACCEPTED  # recorded, waiting for the sweeper
    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):
        assert delivery.deliveries_sweep(now=timezone.now() + timedelta(minutes=5), limit=10) == 1
    assert Message.objects.get().status == MessageStatus.SENT
