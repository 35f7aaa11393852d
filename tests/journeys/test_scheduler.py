"""The scheduler's step semantics: governor defer/suppress, waits, branches, re-entry, pause/archive."""

from datetime import timedelta

import pytest
from django.db import transaction

from journeys import scheduler
from journeys.demo import cart_recovery_definition
from journeys.models import Enrollment, EnrollmentStatus, StepRun, StepRunStatus, Waiting
from journeys.services import enrollment_create, journey_transition
from orchestrator import pipeline
from orchestrator.models import Channel, ContactPoint, Message, MessageStatus, Source
from orchestrator.services import event_ingest
from orchestrator.signals import message_status_changed
from tests.journeys.factories import active_journey, enrollments_due
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db


def fake_governor(monkeypatch, decide):
    """Replace the governor's bulk decision for this test: `decide(draft, at)` returns the Message fields."""

    def decide_bulk(*, drafts, at):
        return [
            Message.objects.create(
                recipient_id=d.recipient_id,
                channel=d.channel,
                purpose=d.purpose,
                content=d.content,
                source=d.source,
                source_ref=d.source_ref,
                requested_channel=d.requested_channel,
                channel_reason=d.channel_reason,
                created_at=at,
                decided_at=at,
                **decide(d, at),
            )
            for d in drafts
        ]

    monkeypatch.setattr(pipeline, "messages_decide", decide_bulk)


def deferred(d, at):
    return {
        "status": MessageStatus.DEFERRED,
        "deliver_after": at + timedelta(hours=1),
        "deferred_at": at,
        "rule": "quiet hours",
        "reason": "Quiet hours until 11:00.",
    }


def suppressed(d, at):
    return {
        "status": MessageStatus.SUPPRESSED,
        "suppressed_at": at,
        "rule": "opt-out",
        "reason": "Opted out of push for engagement.",
    }


def enroll(journey, recipient, committed, clock):
    return committed(enrollment_create, journey=journey, recipient=recipient, now=clock.now)


def advance(committed, clock):
    return committed(scheduler.enrollments_advance, now=clock.now)


def runs(enrollment):
    return list(
        StepRun.objects.filter(enrollment=enrollment).order_by("seq").values_list("step_id", "status")
    )


def test_a_deferred_send_holds_the_enrollment_until_the_governor_releases_it(monkeypatch, clock, committed):
    journey, ada = active_journey(), ReachableRecipientFactory()
    fake_governor(monkeypatch, deferred)
    e = enroll(journey, ada, committed, clock)
    e.refresh_from_db()
    message = Message.objects.get(recipient=ada)
    assert (e.waiting, e.wait_message_id, e.next_run_at) == (
        Waiting.MESSAGE,
        message.pk,
        message.deliver_after,
    )
    assert runs(e) == [("nudge", StepRunStatus.DEFERRED)]

    clock.advance(minutes=30)
    advance(committed, clock)
    e.refresh_from_db()
    assert e.step_id == "nudge" and e.waiting == Waiting.MESSAGE

    # The governor's re-drive accepts it and says so: the enrollment goes on at once.
    clock.advance(minutes=30)

    def redrive():
        with transaction.atomic():
            message.status, message.accepted_at = MessageStatus.ACCEPTED, clock.now
            message.save()
            message_status_changed.send(sender=Message, message=message, previous=MessageStatus.DEFERRED)

    committed(redrive)
    e.refresh_from_db()
    assert runs(e) == [("nudge", StepRunStatus.SENT), ("pause", StepRunStatus.WAITING)]
    assert e.next_run_at == clock.now + timedelta(hours=2), "the wait starts when the push was released"


def test_a_send_still_deferred_at_its_time_is_looked_at_again_later(monkeypatch, clock, committed):
    journey, ada = active_journey(), ReachableRecipientFactory()
    fake_governor(monkeypatch, deferred)
    e = enroll(journey, ada, committed, clock)
    clock.advance(hours=1)
    advance(committed, clock)
    e.refresh_from_db()
    assert e.waiting == Waiting.MESSAGE and e.next_run_at == clock.now + scheduler.RECHECK_AFTER


def test_a_suppressed_send_is_skipped_and_the_journey_goes_on(monkeypatch, clock, committed):
    journey, ada = active_journey(), ReachableRecipientFactory()
    fake_governor(monkeypatch, suppressed)
    e = enroll(journey, ada, committed, clock)
    e.refresh_from_db()
    assert runs(e) == [("nudge", StepRunStatus.SKIPPED), ("pause", StepRunStatus.WAITING)]
    assert "Opted out" in StepRun.objects.get(step_id="nudge").detail
    assert e.status == EnrollmentStatus.ACTIVE


def test_a_suppressed_send_can_exit_the_journey_instead(monkeypatch, clock, committed):
    d = cart_recovery_definition()
    d["steps"][0]["on_suppressed"] = "exit"
    journey, ada = active_journey(d), ReachableRecipientFactory()
    fake_governor(monkeypatch, suppressed)
    e = enroll(journey, ada, committed, clock)
    e.refresh_from_db()
    assert e.status == EnrollmentStatus.EXITED and runs(e) == [("nudge", StepRunStatus.SKIPPED)]


def test_a_purchase_while_a_send_is_deferred_cancels_that_send(monkeypatch, clock, committed):
    journey, ada = active_journey(), ReachableRecipientFactory()
    fake_governor(monkeypatch, deferred)
    e = enroll(journey, ada, committed, clock)
    committed(event_ingest, recipient=ada, name="purchase")
    e.refresh_from_db()
    message = Message.objects.get(recipient=ada)
    assert e.status == EnrollmentStatus.CONVERTED
    assert message.status == MessageStatus.SUPPRESSED and "converted" in message.reason
    assert runs(e) == [("nudge", StepRunStatus.CANCELLED)]


def test_an_unreachable_channel_is_skipped_with_the_reason(clock, committed):
    journey, ada = active_journey(), ReachableRecipientFactory()
    ContactPoint.objects.filter(recipient=ada, channel=Channel.PUSH).delete()
    e = enroll(journey, ada, committed, clock)
    assert runs(e)[0] == ("nudge", StepRunStatus.SKIPPED)
    detail = StepRun.objects.get(step_id="nudge").detail
    assert detail.startswith("Not sent: unreachable:") and "has no opted-in Push contact point." in detail


@pytest.mark.parametrize("on_timeout", ["continue", "exit"])
def test_wait_for_event_times_out(clock, committed, on_timeout):
    d = cart_recovery_definition()
    d["steps"][3]["on_timeout"] = on_timeout
    journey, ada = active_journey(d), ReachableRecipientFactory()
    e = enroll(journey, ada, committed, clock)
    clock.advance(hours=2)
    advance(committed, clock)
    clock.advance(days=7)
    advance(committed, clock)
    e.refresh_from_db()
    sent = sorted(Message.objects.filter(recipient=ada).values_list("channel", flat=True))
    if on_timeout == "exit":
        assert e.exit_reason == "timed out waiting for app_open" and sent == ["email", "push"]
    else:
        assert e.exit_reason == "completed every step" and sent == ["email", "in_app", "push"]
    assert e.status == EnrollmentStatus.EXITED


def test_branches_on_engagement_and_attributes_and_auto_avoids_channels_already_used(clock, committed):
    d = {
        "slug": "welcome",
        "name": "Welcome",
        "trigger": {"event": "signed_up"},
        "steps": [
            {
                "id": "hello",
                "type": "send",
                "channel": "push",
                "purpose": "engagement",
                "content": {"title": "Welcome", "body": "Glad you are here.", "action_url": "app://home"},
            },
            {"id": "later", "type": "wait", "duration": "P1D"},
            {"id": "opened", "type": "branch", "if": "engaged", "then": "done", "else": "plan"},
            {"id": "plan", "type": "branch", "if": {"attribute": "plan", "equals": "pro"}, "then": "tips"},
            {"id": "done", "type": "exit"},
            {
                "id": "tips",
                "type": "send",
                "channel": "auto",
                "purpose": "engagement",
                "content": {
                    "title": "Pro tips",
                    "body": "Three things pros do first.",
                    "action_url": "app://tips",
                },
            },
        ],
    }
    journey = active_journey(d)
    pro, free, fan = (ReachableRecipientFactory(attributes={"plan": p}) for p in ("pro", "free", "pro"))
    enrollments = [enroll(journey, r, committed, clock) for r in (pro, free, fan)]
    Message.objects.filter(recipient=fan).update(status=MessageStatus.OPENED)
    clock.advance(days=1)
    advance(committed, clock)
    for e in enrollments:
        e.refresh_from_db()
    assert [e.exit_reason for e in enrollments] == [
        "completed every step",
        "reached exit step done",
        "reached exit step done",
    ]
    tips = Message.objects.get(recipient=pro, source_ref="welcome · tips")
    assert tips.requested_channel == "auto" and tips.channel != Channel.PUSH
    assert "already used in this journey" in tips.channel_reason
    assert dict(runs(enrollments[0]))["plan"] == StepRunStatus.DONE
    assert (
        "plan = 'pro': match → tips" in StepRun.objects.get(enrollment=enrollments[0], step_id="plan").detail
    )


@pytest.mark.parametrize(
    "reentry, second_after, enrolled",
    [
        ({"policy": "never"}, timedelta(days=10), 1),
        ({"policy": "after_exit"}, timedelta(hours=1), 1),  # still in it
        ({"policy": "after_exit"}, timedelta(days=10), 2),
        ({"policy": "cooldown", "cooldown": "P30D"}, timedelta(days=10), 1),
        ({"policy": "cooldown", "cooldown": "P1D"}, timedelta(days=10), 2),
    ],
)
def test_the_reentry_policy_decides_whether_a_trigger_enrolls_again(
    clock, committed, reentry, second_after, enrolled
):
    journey, ada = active_journey(reentry=reentry), ReachableRecipientFactory()
    committed(event_ingest, recipient=ada, name="cart_abandoned")
    committed(event_ingest, recipient=ada, name="purchase")  # ends the first run
    if enrolled == 1 and second_after == timedelta(hours=1):
        Enrollment.objects.update(status=EnrollmentStatus.ACTIVE, ended_at=None)
    clock.advance(seconds=second_after.total_seconds())
    committed(event_ingest, recipient=ada, name="cart_abandoned")
    assert Enrollment.objects.filter(journey=journey, recipient=ada).count() == enrolled


def test_a_paused_journey_holds_its_enrollments_and_archiving_ends_them(clock, committed):
    journey, ada = active_journey(), ReachableRecipientFactory()
    e = enroll(journey, ada, committed, clock)
    journey = journey_transition(journey=journey, action="pause", now=clock.now)
    clock.advance(hours=3)
    advance(committed, clock)
    assert Message.objects.filter(recipient=ada).count() == 1
    journey = journey_transition(journey=journey, action="activate", now=clock.now)
    advance(committed, clock)
    assert Message.objects.filter(recipient=ada).count() == 2
    committed(journey_transition, journey=journey, action="archive", now=clock.now)
    e.refresh_from_db()
    assert e.status == EnrollmentStatus.EXITED and e.exit_reason == "the journey was archived"
    assert runs(e)[-1] == ("visit", StepRunStatus.CANCELLED)


def test_every_journey_send_is_marked_as_a_journey_message(clock, committed):
    journey, ada = active_journey(), ReachableRecipientFactory()
    enroll(journey, ada, committed, clock)
    m = Message.objects.get(recipient=ada)
    assert (m.source, m.source_ref, m.requested_channel) == (Source.JOURNEY, "cart-recovery · nudge", "push")


def test_the_scheduler_itself_notices_a_goal_event_it_was_not_told_about(monkeypatch, clock, committed):
    """Events are checked before every step, so a lost wake-up cannot make a journey send after a purchase."""
    from tests.orchestrator.factories import EventFactory

    journey, ada = active_journey(), ReachableRecipientFactory()
    fake_governor(monkeypatch, deferred)
    e = enroll(journey, ada, committed, clock)
    EventFactory(recipient=ada, name="purchase", occurred_at=clock.now)  # recorded without the signal
    clock.advance(hours=1)
    advance(committed, clock)
    e.refresh_from_db()
    assert e.status == EnrollmentStatus.CONVERTED
    assert Message.objects.get(recipient=ada).status == MessageStatus.SUPPRESSED
    assert runs(e) == [("nudge", StepRunStatus.CANCELLED)]


def test_a_send_the_lint_now_blocks_is_skipped_with_the_lint_reason(monkeypatch, clock, committed):
    from channels_app import lint

    journey, ada = active_journey(), ReachableRecipientFactory()
    monkeypatch.setattr(
        pipeline,
        "message_lint",
        lambda **kw: [lint.Violation("push_too_long", lint.Severity.BLOCK, "A push carries one short line.")],
    )
    e = enroll(journey, ada, committed, clock)
    run = StepRun.objects.get(enrollment=e, step_id="nudge")
    assert run.status == StepRunStatus.SKIPPED and "push_too_long" in run.detail
    assert not Message.objects.filter(recipient=ada).exists()


def test_accepted_sends_are_handed_to_delivery_in_one_call_per_batch(monkeypatch, clock, committed):
    from channels_app import receivers

    calls = []
    monkeypatch.setattr(receivers, "deliveries_wake", lambda *, message_ids: calls.append(list(message_ids)))
    journey = active_journey()
    enrollments_due(journey, [ReachableRecipientFactory() for _ in range(3)], due_at=clock.now)
    advance(committed, clock)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(Message.objects.values_list("pk", flat=True))


@pytest.mark.django_db
def test_the_portable_writer_used_on_sqlite_advances_a_batch_like_the_postgresql_one(
    clock, committed, monkeypatch
):
    """`make run` defaults to SQLite, which has no unnest: the ORM writer must give the same records."""
    monkeypatch.setattr(scheduler, "is_postgres", lambda: False)
    journey = active_journey()
    people = [ReachableRecipientFactory() for _ in range(3)]
    Enrollment.objects.bulk_create(
        Enrollment(
            journey=journey,
            version=journey.live_version,
            recipient=r,
            step_id="nudge",
            next_run_at=clock.now,
            entered_at=clock.now,
        )
        for r in people
    )
    committed(scheduler.enrollments_advance_due, now=clock.now, limit=100)
    runs = sorted(StepRun.objects.values_list("enrollment__recipient_id", "step_id", "status"))
    assert runs == sorted(
        [(r.pk, "nudge", "sent") for r in people] + [(r.pk, "pause", "waiting") for r in people]
    )
    for e in Enrollment.objects.all():
        assert (e.step_id, e.waiting) == ("pause", Waiting.TIME)
        assert e.waiting_run_id == StepRun.objects.get(enrollment=e, step_id="pause").pk
        assert e.next_run_at == clock.now + timedelta(hours=2)
