"""Each step runs exactly once: duplicated tasks, a unique StepRun, and two workers on one due batch."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Count

from journeys import scheduler, tasks
from journeys.models import Enrollment, StepRun
from orchestrator.models import Message
from tests.journeys.factories import StepRunFactory, active_journey, enrollments_due
from tests.orchestrator.factories import ReachableRecipientFactory


@pytest.mark.django_db
def test_a_duplicated_advance_task_finds_the_work_done_and_sends_nothing(clock, committed):
    journey, ada = active_journey(), ReachableRecipientFactory()
    enrollment = Enrollment.objects.create(
        journey=journey,
        version=journey.live_version,
        recipient=ada,
        step_id="nudge",
        next_run_at=clock.now,
        entered_at=clock.now,
    )
    assert committed(tasks.enrollments_advance_task, [enrollment.pk]) == 1
    assert committed(tasks.enrollments_advance_task, [enrollment.pk]) == 0
    assert Message.objects.filter(recipient=ada).count() == 1


@pytest.mark.django_db
def test_a_step_run_is_unique_per_enrollment_and_step_number():
    run = StepRunFactory(seq=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        StepRunFactory(enrollment=run.enrollment, seq=0, step_id="pause", step_type="wait")


def _due_world(n):
    # A fixed 10:00 UTC (recipients are in UTC): clear of quiet hours whatever the wall clock says.
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    journey = active_journey(now=now)
    recipients = [ReachableRecipientFactory() for _ in range(n)]
    enrollments_due(journey, recipients, due_at=now - timedelta(seconds=1), entered_at=now)
    return now


def _two_workers(work):
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            barrier.wait(timeout=10)
            results.append(work())
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors
    return results


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_workers_draining_the_same_due_batch_send_each_step_once():
    n = 120
    now = _due_world(n)
    results = _two_workers(lambda: scheduler.enrollments_advance(now=now, batch_size=20))
    assert sum(r.enrollments for r in results) == n
    per_recipient = Message.objects.values("recipient").annotate(n=Count("id"))
    assert per_recipient.count() == n and {row["n"] for row in per_recipient} == {1}
    assert StepRun.objects.count() == 2 * n
    assert (
        not StepRun.objects.values("enrollment", "step_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_same_task_delivered_twice_at_once_sends_once():
    now = _due_world(30)
    ids = list(Enrollment.objects.values_list("pk", flat=True))
    results = _two_workers(lambda: scheduler.enrollments_advance(now=now, ids=ids, batch_size=7))
    assert sum(r.enrollments for r in results) == 30
    assert Message.objects.count() == 30 and StepRun.objects.count() == 60


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_purchase_while_a_worker_holds_the_enrollment_still_converts_it_without_deadlock():
    from journeys.models import EnrollmentStatus
    from orchestrator.services import event_ingest

    now = _due_world(1)
    enrollment = Enrollment.objects.get()
    locked, release = threading.Event(), threading.Event()

    def busy_worker():
        try:
            with transaction.atomic():
                Enrollment.objects.select_for_update().get(pk=enrollment.pk)
                locked.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    worker = threading.Thread(target=busy_worker)
    worker.start()
    assert locked.wait(timeout=10)
    threading.Timer(0.5, release.set).start()
    # The event commits at once (the busy row is skipped); its follow-up task waits for it, then converts.
    event_ingest(recipient=enrollment.recipient, name="purchase", occurred_at=now + timedelta(seconds=1))
    worker.join(timeout=15)
    enrollment.refresh_from_db()
    assert enrollment.status == EnrollmentStatus.CONVERTED
