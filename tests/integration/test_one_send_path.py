"""Every source takes the one send path: the same validation, lint, shelf life, decision record and delivery
hand-off for a service's API call, a journey step and a campaign (the demo's campaign)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from channels_app import receivers
from channels_app.backends import push
from governor.redrive import deferred_redrive
from journeys.models import Enrollment, StepRun, StepRunStatus
from journeys.scheduler import enrollments_advance
from orchestrator.history import IllegalTransition, message_status_move
from orchestrator.models import Message, MessageDecision, MessageStatus, Source
from orchestrator.pipeline import SendRefused, SendRequest, message_send, messages_send_bulk
from tests.journeys.factories import active_journey
from tests.orchestrator.factories import ReachableRecipientFactory, RecipientFactory

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PUSH = {"title": "Still thinking it over?", "body": "Your cart is saved.", "action_url": "app://cart"}


@pytest.fixture
def enqueued(monkeypatch):
    """What the channels app hands to delivery, per on-commit hook."""
    calls: list[list[int]] = []
    monkeypatch.setattr(receivers, "deliveries_wake", lambda *, message_ids: calls.append(list(message_ids)))
    return calls


def via_api(api, recipient, content, *, at):
    body = {
        "recipient": recipient.external_id,
        "channel": "push",
        "purpose": "engagement",
        "content": content,
    }
    response = api.post("/api/v1/messages/", body, format="json")
    if response.status_code != 201:
        return response.json()
    return Message.objects.get(pk=response.json()["id"])


def via_journey(recipient, content, *, at, journey=None):
    steps = [{"id": "nudge", "type": "send", "channel": "push", "purpose": "engagement", "content": content}]
    journey = journey or active_journey(steps=steps, now=at)
    e = Enrollment.objects.create(
        journey=journey,
        version=journey.live_version,
        recipient=recipient,
        step_id="nudge",
        next_run_at=at,
        entered_at=at,
    )
    enrollments_advance(now=at, ids=[e.pk])
    run = StepRun.objects.get(enrollment=e, step_id="nudge")
    return run.message if run.message_id else run


def via_campaign(recipient, content, *, at):
    request = SendRequest(
        recipient_id=recipient.pk,
        channel="push",
        purpose="engagement",
        content=content,
        source=Source.CAMPAIGN,
    )
    return messages_send_bulk(requests=[request], at=at)[0]


@pytest.mark.parametrize("source", ["api", "journey", "campaign"])
def test_every_source_gets_the_same_shelf_life_decision_record_and_delivery_hand_off(
    source, api, enqueued, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(timezone, "now", lambda: NOON)
    r = ReachableRecipientFactory()
    with django_capture_on_commit_callbacks(execute=True):
        m = {
            "api": lambda: via_api(api, r, PUSH, at=NOON),
            "journey": lambda: via_journey(r, PUSH, at=NOON),
            "campaign": lambda: via_campaign(r, PUSH, at=NOON),
        }[source]()
    assert isinstance(m, Message), m
    assert m.status == MessageStatus.ACCEPTED
    assert m.expires_at == NOON + timedelta(hours=4)  # push's shelf life, from the channel policy
    assert m.warnings == []
    assert [(d.outcome, d.used, d.limit) for d in m.decisions.all()] == [("accepted", 1, 1)]
    assert enqueued == [[m.pk]]  # handed to delivery once, on commit


@pytest.mark.parametrize("source", ["api", "journey", "campaign"])
def test_every_source_is_refused_by_the_same_lint(source, api, monkeypatch):
    """The team tightens the push policy: whatever the source, the same send is now refused."""
    from channels_app.models import ChannelPolicy

    monkeypatch.setattr(timezone, "now", lambda: NOON)
    r = ReachableRecipientFactory()
    LONG_PUSH = PUSH
    if source == "journey":  # approved while the push still fit; the runtime lint catches the change
        journey = active_journey(
            steps=[
                {"id": "nudge", "type": "send", "channel": "push", "purpose": "engagement", "content": PUSH}
            ],
            now=NOON,
        )
    ChannelPolicy.objects.filter(channel="push").update(body_max_words=3)
    result = {
        "api": lambda: via_api(api, r, LONG_PUSH, at=NOON),
        "journey": lambda: via_journey(r, LONG_PUSH, at=NOON, journey=journey),
        "campaign": lambda: via_campaign(r, LONG_PUSH, at=NOON),
    }[source]()
    if source == "api":
        assert result["codes"] == ["push_too_long"]
    elif source == "journey":
        assert result.status == StepRunStatus.SKIPPED and "push_too_long" in result.detail
    else:
        assert (
            isinstance(result, SendRefused) and result.code == "push_too_long" and result.field == "content"
        )
    assert not Message.objects.exists()


def test_a_refusal_in_a_batch_refuses_that_request_only():
    a, b = ReachableRecipientFactory(), RecipientFactory()  # b has no contact point
    results = messages_send_bulk(
        requests=[
            SendRequest(recipient_id=a.pk, channel="push", purpose="engagement", content=PUSH),
            SendRequest(recipient_id=b.pk, channel="push", purpose="engagement", content=PUSH),
            SendRequest(recipient_id=a.pk, channel="sms", purpose="promotional", content={"body": "Sale!"}),
            SendRequest(recipient_id=10**9, channel="email", purpose="engagement", content=PUSH),
        ],
        at=NOON,
    )
    assert isinstance(results[0], Message) and results[0].status == MessageStatus.ACCEPTED
    assert (results[1].code, results[1].field) == ("unreachable", "channel")
    assert b.external_id in results[1].reason
    assert (results[2].code, results[2].field) == ("sms_purpose", "content")
    assert (results[3].code, results[3].field) == ("unknown_recipient", "recipient")
    assert Message.objects.count() == 1


def test_the_demo_campaign_goes_through_the_pipeline_once(enqueued, django_capture_on_commit_callbacks):
    from journeys.demo import demo_campaign_seed
    from orchestrator.demo import demo_recipients_seed

    demo_recipients_seed(count=6, progress=False)
    with django_capture_on_commit_callbacks(execute=True):
        campaign = demo_campaign_seed(now=timezone.now())
    messages = Message.objects.filter(source=Source.CAMPAIGN, source_ref=campaign.source_ref)
    assert campaign.audience == messages.count() > 0
    assert all(m.decisions.count() == 1 for m in messages)
    assert all(m.content["subject"] and "{{" not in m.content["body"] for m in messages)
    accepted = sorted(messages.filter(status=MessageStatus.ACCEPTED).values_list("pk", flat=True))
    assert accepted and sorted(pk for call in enqueued for pk in call) == accepted
    assert demo_campaign_seed(now=timezone.now()).pk == campaign.pk
    assert Message.objects.filter(source=Source.CAMPAIGN).count() == messages.count()


# ---- quiet hours do not silently kill a message ---------------------------------------------------------


def test_a_push_at_23_local_waits_for_8_and_is_delivered_then(
    django_capture_on_commit_callbacks, monkeypatch
):
    push.outbox.clear()
    paris = ReachableRecipientFactory(timezone="Europe/Paris")
    night = datetime(2026, 6, 10, 21, 0, tzinfo=UTC)  # 23:00 in Paris (summer time)
    eight = datetime(2026, 6, 11, 6, 0, tzinfo=UTC)  # 08:00 in Paris
    m = message_send(recipient=paris, channel="push", purpose="engagement", content=PUSH, at=night)
    assert m.status == MessageStatus.DEFERRED and m.deliver_after == eight
    # Push's 4-hour shelf life starts when the window ends, not at 23:00 (it would be dead by 03:00).
    assert m.expires_at == eight + timedelta(hours=4)
    assert "Quiet hours 21:00–08:00 in Europe/Paris; deferred to 08:00 local" in m.reason
    monkeypatch.setattr(timezone, "now", lambda: eight)  # delivery reads the clock too
    with django_capture_on_commit_callbacks(execute=True):
        deferred_redrive(now=eight, limit=100)
    m.refresh_from_db()
    assert m.status == MessageStatus.SENT and [o["message_id"] for o in push.outbox] == [m.pk]
    assert [d.outcome for d in m.decisions.all()] == ["deferred", "accepted"]


def test_a_push_with_an_earlier_explicit_expiry_expires_and_says_both():
    paris = ReachableRecipientFactory(timezone="Europe/Paris")
    night = datetime(2026, 6, 10, 21, 0, tzinfo=UTC)
    m = message_send(
        recipient=paris,
        channel="push",
        purpose="engagement",
        content=PUSH,
        at=night,
        expires_at=datetime(2026, 6, 10, 21, 30, tzinfo=UTC),  # 23:30 in Paris
    )
    assert m.status == MessageStatus.EXPIRED and m.rule == "Night: push and SMS"
    assert "Quiet hours 21:00–08:00 in Europe/Paris; deferred to 08:00 local" in m.reason
    assert "it expires at 23:30 Europe/Paris (21:30 UTC) first, so it will not be sent" in m.reason


# ---- every decision kept, statuses moved by the one table ------------------------------------------------


def test_a_redrive_adds_a_decision_and_the_api_lists_them_oldest_first(api):
    r = ReachableRecipientFactory()
    t0 = NOON
    for n in range(3):  # the daily cap of 3 spent, the first 23 h ago
        message_send(
            recipient=r,
            channel="email",
            purpose="engagement",
            content={"subject": "s", "body": "b"},
            at=t0 - timedelta(hours=23 - n),
        )
    m = message_send(
        recipient=r, channel="email", purpose="engagement", content={"subject": "s", "body": "b"}, at=t0
    )
    assert m.status == MessageStatus.DEFERRED and m.deliver_after == t0 + timedelta(hours=1)
    first_reason = m.reason
    deferred_redrive(now=t0 + timedelta(hours=1), limit=10)
    m.refresh_from_db()
    assert m.status == MessageStatus.ACCEPTED
    body = api.get(f"/api/v1/messages/{m.pk}/").json()
    assert [d["outcome"] for d in body["decisions"]] == ["deferred", "accepted"]
    waited = body["decisions"][0]
    assert waited["reason"] == first_reason and waited["rule"] == "Engagement + promotional, 24 h"
    assert (waited["used"], waited["limit"], waited["window"]) == (3, 3, "P1D")
    assert waited["next_slot"].startswith("2026-03-02T13:00:00")
    assert MessageDecision.objects.filter(message=m).count() == 2


def test_status_moves_outside_the_table_are_refused():
    r = ReachableRecipientFactory()
    m = message_send(
        recipient=r, channel="email", purpose="engagement", content={"subject": "s", "body": "b"}, at=NOON
    )
    message_status_move(message=m, status=MessageStatus.SENT, at=NOON)
    with pytest.raises(IllegalTransition):
        message_status_move(message=m, status=MessageStatus.DEFERRED, at=NOON)
    with pytest.raises(IllegalTransition):
        message_status_move(message=m, status=MessageStatus.ACCEPTED, at=NOON)
    assert mail.outbox == []
