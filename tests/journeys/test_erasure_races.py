"""An erasure while a batch is in flight (real commits, threads with their own connections). A journey or
campaign batch locks its enrollments or members, then the person's recipient row (the governor). The
erasure takes its locks in the same order, so neither waits for the other in a cycle: PostgreSQL used to
detect a deadlock and fail one of them."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from journeys import scheduler
from journeys.models import Enrollment, EnrollmentStatus, StepRun
from orchestrator import pipeline
from orchestrator.erasure import recipient_erase
from orchestrator.models import Message, MessageStatus
from tests.journeys.campaign_workers import Worker
from tests.journeys.factories import active_journey, enrollments_due
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # recipients in UTC: clear of quiet hours


def _held_before_the_governor(monkeypatch):
    """The first batch through the pipeline waits just before the governor locks its recipients (its
    enrollments or members already locked) until `release` is set. Returns (holding, release)."""
    holding, release, first = threading.Event(), threading.Event(), threading.Lock()
    real = pipeline.messages_decide

    def decide(*args, **kwargs):
        if first.acquire(blocking=False):
            holding.set()
            assert release.wait(30), "never released"
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "messages_decide", decide)
    return holding, release


def test_an_erasure_while_a_journey_batch_holds_the_persons_enrollment(monkeypatch):
    journey = active_journey(now=NOW)
    people = [ReachableRecipientFactory() for _ in range(4)]
    enrollments_due(journey, people, due_at=NOW - timedelta(seconds=1), entered_at=NOW)
    gone = people[1]
    holding, release = _held_before_the_governor(monkeypatch)
    batch = Worker(lambda: scheduler.enrollments_advance(now=NOW, batch_size=10))
    batch.start()
    assert holding.wait(30), batch.error
    eraser = Worker(lambda: recipient_erase(recipient=gone, at=NOW + timedelta(milliseconds=5)))
    eraser.start()
    eraser.join(0.5)  # waiting for the batch's enrollment rows
    release.set()
    batch.join(60)
    eraser.join(60)
    assert (batch.error, eraser.error) == (None, None)
    # The batch went first (the erasure waited for it), then the erasure stopped the enrollment and
    # scrubbed what the batch wrote: nothing of the person is left to send.
    enrollment = Enrollment.objects.get(recipient=gone)
    assert enrollment.status == EnrollmentStatus.EXITED and enrollment.exit_reason == "recipient erased"
    assert (
        not Message.objects.filter(recipient=gone)
        .exclude(status=MessageStatus.SUPPRESSED)
        .filter(status__in=[MessageStatus.ACCEPTED, MessageStatus.DEFERRED])
        .exists()
    )
    others = Message.objects.exclude(recipient=gone)
    assert others.count() == 3 and StepRun.objects.exclude(enrollment__recipient=gone).count() >= 3
