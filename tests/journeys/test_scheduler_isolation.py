"""One bad row must not stop the world: an enrollment whose step raises is marked errored with its
reason while the rest of its batch advances, and the due-work pass still runs every later job."""

from __future__ import annotations

import copy

import pytest
from django.db import DataError

from journeys import scheduler
from journeys.demo import cart_recovery_definition
from journeys.models import Enrollment, EnrollmentStatus, JourneyVersion, StepRun, StepRunStatus
from journeys.selectors import journey_counts
from journeys.services import enrollment_create
from orchestrator import work
from orchestrator.models import Message
from tests.journeys.factories import active_journey
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db


def enroll_three(journey, clock, committed):
    people = [ReachableRecipientFactory() for _ in range(3)]
    # Enroll without running the first step yet: the scheduler pass below is what is under test.
    enrollments = [enrollment_create(journey=journey, recipient=p, now=clock.now) for p in people]
    return enrollments


def resume_fails_for(monkeypatch, enrollment, error: Exception) -> None:
    """This enrollment's step raises `error` when the scheduler runs it; the others run as usual."""
    original = scheduler._resume

    def resume(e, b):
        if e.pk == enrollment.pk:
            raise error
        return original(e, b)

    monkeypatch.setattr(scheduler, "_resume", resume)


def test_a_step_that_raises_errors_its_enrollment_and_the_batch_goes_on(monkeypatch, clock, committed):
    journey = active_journey()
    good_a, bad, good_b = enroll_three(journey, clock, committed)
    resume_fails_for(monkeypatch, bad, OverflowError("date value out of range"))
    committed(scheduler.enrollments_advance, now=clock.now)

    bad.refresh_from_db()
    assert bad.status == EnrollmentStatus.ERRORED and bad.next_run_at is None
    assert "OverflowError: date value out of range" in bad.error and "nudge" in bad.error
    assert bad.exit_reason.startswith("error:")
    assert not StepRun.objects.filter(enrollment=bad).exists()
    for good in (good_a, good_b):
        good.refresh_from_db()
        assert good.status == EnrollmentStatus.ACTIVE and good.step_id == "pause"  # sent the push, waits
        assert StepRun.objects.filter(enrollment=good, step_id="nudge", status=StepRunStatus.SENT).exists()
    assert Message.objects.filter(recipient_id__in=[good_a.recipient_id, good_b.recipient_id]).count() == 2
    assert not Message.objects.filter(recipient_id=bad.recipient_id).exists()
    assert journey_counts(journey=journey)["errored"] == 1


def test_a_stored_wait_beyond_the_bound_errors_only_that_journeys_enrollments(clock, committed):
    """The issue's case: an active journey with a huge wait once crashed every due-work pass."""
    healthy = active_journey()
    poisoned = active_journey(slug="poisoned")
    version = JourneyVersion.objects.get(journey=poisoned)
    broken = copy.deepcopy(version.definition)
    broken["steps"][0] = {"id": "nudge", "type": "wait", "duration": "P99999999999D"}
    # Written behind validation's back, as an old row would be.
    JourneyVersion.objects.filter(pk=version.pk).update(definition=broken)
    scheduler._compiled.pop(version.pk, None)
    fine = enroll_three(healthy, clock, committed)
    stuck = Enrollment.objects.create(
        journey=poisoned,
        version=version,
        recipient=ReachableRecipientFactory(),
        step_id="nudge",
        next_run_at=clock.now,
        entered_at=clock.now,
    )
    committed(scheduler.enrollments_advance, now=clock.now)

    stuck.refresh_from_db()
    assert stuck.status == EnrollmentStatus.ERRORED
    assert "P99999999999D" in stuck.error and "cannot be run" in stuck.error
    for e in fine:
        e.refresh_from_db()
        assert e.status == EnrollmentStatus.ACTIVE and e.step_id == "pause"


def test_a_batch_whose_write_fails_is_retried_one_by_one(monkeypatch, clock, committed):
    """A database error (here a column overflow) rolls the batch back; its enrollments are then run one
    at a time, so only the guilty one ends errored."""
    journey = active_journey()
    good_a, bad, good_b = enroll_three(journey, clock, committed)
    original = scheduler._write

    def write(batch, b):
        if any(e.pk == bad.pk for e in batch):
            raise DataError("value too long for type character varying(100)")
        return original(batch, b)

    monkeypatch.setattr(scheduler, "_write", write)
    committed(scheduler.enrollments_advance, now=clock.now)

    statuses = dict(Enrollment.objects.values_list("pk", "status"))
    assert statuses == {
        good_a.pk: EnrollmentStatus.ACTIVE,
        bad.pk: EnrollmentStatus.ERRORED,
        good_b.pk: EnrollmentStatus.ACTIVE,
    }
    assert "DataError" in Enrollment.objects.get(pk=bad.pk).error
    assert Enrollment.objects.filter(pk__in=[good_a.pk, good_b.pk], step_id="pause").count() == 2


ran: list[str] = []


def boom(*, now, limit):
    ran.append("boom")
    raise RuntimeError("a broken job")


def later(*, now, limit):
    ran.append("later")
    return 0


def test_the_due_work_pass_runs_every_job_even_when_one_raises(settings, clock, committed):
    journey = active_journey()
    waiting = enroll_three(journey, clock, committed)
    settings.ORCHESTRATOR = {
        **settings.ORCHESTRATOR,
        "DUE_WORK": [
            "tests.journeys.test_scheduler_isolation.boom",
            "journeys.scheduler.enrollments_advance_due",
            "tests.journeys.test_scheduler_isolation.later",
        ],
    }
    ran.clear()
    errors: dict[str, str] = {}
    handled = committed(work.due_work_run, now=clock.now, errors=errors)
    assert ran == ["boom", "later"]
    assert handled["tests.journeys.test_scheduler_isolation.boom"] == -1
    assert handled["journeys.scheduler.enrollments_advance_due"] == 3
    assert errors == {"tests.journeys.test_scheduler_isolation.boom": "RuntimeError: a broken job"}
    assert all(Enrollment.objects.get(pk=e.pk).step_id == "pause" for e in waiting)

    # The scheduled task runs the whole pass too, then fails so django-q2 shows the failure.
    ran.clear()
    with pytest.raises(work.DueWorkFailed, match="a broken job"):
        work.due_work_task()
    assert ran == ["boom", "later"]


def test_errored_enrollments_are_counted_and_listed_in_the_admin(admin_client, monkeypatch, clock, committed):
    journey = active_journey(cart_recovery_definition())
    _, bad, _ = enroll_three(journey, clock, committed)
    resume_fails_for(monkeypatch, bad, ValueError("bad"))
    committed(scheduler.enrollments_advance, now=clock.now)
    page = admin_client.get("/admin/journeys/enrollment/?status__exact=errored").content.decode()
    assert "ValueError: bad" in page or "error: step" in page
    listing = admin_client.get("/admin/journeys/journey/").content.decode()
    assert "Errored" in listing
    detail = admin_client.get(f"/admin/journeys/enrollment/{bad.pk}/change/").content.decode()
    assert "ValueError: bad" in detail
    home = admin_client.get("/admin/").content.decode()
    assert "1 enrollment stopped by an error" in home
