"""The cart-recovery sequence end to end under a moving clock (the issue's must-show)."""

from datetime import timedelta

import pytest
from django.core.management import call_command

from journeys.models import Enrollment, EnrollmentStatus, StepRun, StepRunStatus, Waiting
from orchestrator.models import CLEARED_STATUSES, Message, MessageStatus, Source
from orchestrator.selectors import recipient_timeline
from tests.journeys.factories import active_journey
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db


def post_event(api, committed, recipient, name):
    response = committed(
        api.post, "/api/v1/events/", {"recipient": recipient.external_id, "name": name}, format="json"
    )
    assert response.status_code == 201, response.content
    return response


def orchestrate(committed):
    committed(call_command, "orchestrate", "--once")


def journey_sends(recipient):
    return list(
        Message.objects.filter(recipient=recipient, source=Source.JOURNEY).order_by("created_at", "id")
    )


def test_push_now_email_at_two_hours_in_app_on_the_next_visit(api, clock, committed):
    journey = active_journey()
    ada = ReachableRecipientFactory(external_id="ada")

    post_event(api, committed, ada, "cart_abandoned")
    sends = journey_sends(ada)
    assert [(m.channel, m.source_ref) for m in sends] == [("push", "cart-recovery · nudge")]
    enrollment = Enrollment.objects.get(journey=journey, recipient=ada)
    assert enrollment.waiting == Waiting.TIME and enrollment.next_run_at == clock.now.replace(hour=12)

    clock.advance(hours=1, minutes=59)
    orchestrate(committed)
    assert len(journey_sends(ada)) == 1, "nothing before the two hours are up"

    clock.advance(minutes=1)
    orchestrate(committed)
    sends = journey_sends(ada)
    assert [(m.channel, m.source_ref) for m in sends][1] == ("email", "cart-recovery · detail")
    enrollment.refresh_from_db()
    assert (enrollment.waiting, enrollment.wait_event) == (Waiting.EVENT, "app_open")

    clock.advance(hours=3)
    orchestrate(committed)
    assert len(journey_sends(ada)) == 2, "the in-app prompt waits for a visit"
    post_event(api, committed, ada, "app_open")
    prompt = journey_sends(ada)[-1]
    assert (prompt.channel, prompt.source_ref) == ("in_app", "cart-recovery · prompt")
    assert prompt.status in CLEARED_STATUSES
    # The same visit: the app fetches its inbox, which shows the prompt and marks it delivered.
    assert prompt.status == MessageStatus.SENT, "queued in the inbox, waiting for the app to show it"
    response = api.get("/api/v1/recipients/ada/inbox/")
    assert response.status_code == 200
    assert [m["id"] for m in response.json()] == [prompt.id]
    prompt.refresh_from_db()
    assert prompt.status == MessageStatus.DELIVERED

    enrollment.refresh_from_db()
    assert enrollment.status == EnrollmentStatus.EXITED and enrollment.exit_reason == "completed every step"
    runs = list(StepRun.objects.filter(enrollment=enrollment).values_list("step_id", "status"))
    assert runs == [
        ("nudge", StepRunStatus.SENT),
        ("pause", StepRunStatus.DONE),
        ("detail", StepRunStatus.SENT),
        ("visit", StepRunStatus.DONE),
        ("prompt", StepRunStatus.SENT),
    ]
    # Each send appears once in the recipient's timeline, with the journey and step named.
    timeline_refs = [e.message.source_ref for e in recipient_timeline(recipient=ada) if e.kind == "message"]
    for ref in ("cart-recovery · nudge", "cart-recovery · detail", "cart-recovery · prompt"):
        assert timeline_refs.count(ref) == 1

    # Another pass sends nothing more.
    clock.advance(days=8)
    orchestrate(committed)
    assert len(journey_sends(ada)) == 3


@pytest.mark.parametrize("purchase_after_hours", [0.5, 3])
def test_a_purchase_at_any_point_stops_everything_that_remains(api, clock, committed, purchase_after_hours):
    journey = active_journey()
    bo = ReachableRecipientFactory(external_id="bo")
    post_event(api, committed, bo, "cart_abandoned")
    clock.advance(hours=purchase_after_hours)
    orchestrate(committed)
    sent_before = len(journey_sends(bo))

    post_event(api, committed, bo, "purchase")
    enrollment = Enrollment.objects.get(journey=journey, recipient=bo)
    assert enrollment.status == EnrollmentStatus.CONVERTED
    assert enrollment.next_run_at is None and enrollment.exit_reason.startswith("converted: purchase")
    assert StepRun.objects.filter(enrollment=enrollment, status=StepRunStatus.CANCELLED).count() == 1

    for hours in (2, 24, 24 * 8):
        clock.advance(hours=hours)
        orchestrate(committed)
        post_event(api, committed, bo, "app_open")
    assert len(journey_sends(bo)) == sent_before


def test_report_counts_the_conversion_and_its_touches(api, clock, committed):
    journey = active_journey()
    cy, di = ReachableRecipientFactory(external_id="cy"), ReachableRecipientFactory(external_id="di")
    for r in (cy, di):
        post_event(api, committed, r, "cart_abandoned")
    clock.advance(hours=2)
    orchestrate(committed)
    # A touch is a send that reached the recipient: the providers' delivery receipts come in.
    for message in journey_sends(cy):
        delivered_at = (message.created_at + timedelta(seconds=5)).isoformat()
        receipt = api.post(
            f"/api/v1/messages/{message.pk}/events/",
            {"type": "delivered", "occurred_at": delivered_at},
            format="json",
        )
        assert receipt.status_code in (200, 201), receipt.content
    clock.advance(minutes=5)
    post_event(api, committed, cy, "purchase")

    report = api.get(f"/api/v1/journeys/{journey.slug}/report/").json()
    assert report["enrolled"] == 2 and report["converted"] == 1 and report["conversion_rate"] == 0.5
    assert report["touch_sequences"] == [{"sequence": "push → email", "converted": 1}]
    assert report["attribution"]["first_touch"] == {"push": 1}
    assert report["attribution"]["last_touch"] == {"email": 1}
    assert report["attribution"]["linear"] == {"push": 0.5, "email": 0.5}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_with_real_commits_the_event_request_itself_triggers_the_first_send(api, clock):
    """No captured callbacks: the enrollment's task runs on the real commit of POST events/."""
    active_journey()
    eve = ReachableRecipientFactory(external_id="eve")
    assert (
        api.post("/api/v1/events/", {"recipient": "eve", "name": "cart_abandoned"}, format="json").status_code
        == 201
    )
    assert [m.source_ref for m in journey_sends(eve)] == ["cart-recovery · nudge"]
    clock.advance(hours=2)
    call_command("orchestrate", "--once")
    assert [m.source_ref for m in journey_sends(eve)][-1] == "cart-recovery · detail"
    api.post("/api/v1/events/", {"recipient": "eve", "name": "purchase"}, format="json")
    assert Enrollment.objects.get(recipient=eve).status == EnrollmentStatus.CONVERTED
