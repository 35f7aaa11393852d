"""Factories for journeys: a journey with a version, enrollments, step runs."""

from datetime import timedelta

import factory
from django.utils import timezone

from journeys.demo import cart_recovery_definition
from journeys.models import (
    ConversionDefinition,
    Enrollment,
    Journey,
    JourneyStatus,
    JourneyVersion,
    StepRun,
    StepRunStatus,
)
from orchestrator.models import Message, MessageStatus
from tests.orchestrator.factories import MessageFactory, ReachableRecipientFactory


class JourneyFactory(factory.django.DjangoModelFactory):
    """A draft journey (use `active_journey()` for one that runs)."""

    class Meta:
        model = Journey

    slug = factory.Sequence(lambda n: f"journey-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())
    status = JourneyStatus.DRAFT


class JourneyVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JourneyVersion

    journey = factory.SubFactory(JourneyFactory)
    number = 1
    definition = factory.LazyAttribute(lambda o: {**cart_recovery_definition(), "slug": o.journey.slug})


class EnrollmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Enrollment

    version = factory.SubFactory(JourneyVersionFactory)
    journey = factory.SelfAttribute("version.journey")
    recipient = factory.SubFactory(ReachableRecipientFactory)
    step_id = "nudge"
    next_run_at = factory.LazyFunction(timezone.now)
    entered_at = factory.LazyFunction(timezone.now)


class StepRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StepRun

    enrollment = factory.SubFactory(EnrollmentFactory)
    seq = factory.Sequence(lambda n: n)
    step_id = "nudge"
    step_type = "send"
    status = StepRunStatus.DONE
    started_at = factory.LazyFunction(timezone.now)


def active_journey(definition: dict | None = None, *, now=None, **changes):
    """A journey taken through propose → approve → activate by the services (as an operator would)."""
    from journeys.services import journey_create, journey_transition

    now = now or timezone.now()
    definition = {**(definition or cart_recovery_definition()), **changes}
    journey = journey_create(definition=definition, now=now)
    for action in ("propose", "approve", "activate"):
        journey = journey_transition(journey=journey, action=action, now=now)
    return journey


def enrollments_due(journey, recipients, *, due_at, entered_at=None, step_id: str = "nudge") -> list:
    """Enrollments of `recipients` in `journey`'s live version, on `step_id` and due at `due_at`, written
    in one statement (no event, no task: the test runs the scheduler itself)."""
    return Enrollment.objects.bulk_create(
        Enrollment(
            journey=journey,
            version=journey.live_version,
            recipient=r,
            step_id=step_id,
            next_run_at=due_at,
            entered_at=entered_at or due_at,
        )
        for r in recipients
    )


class ConversionDefinitionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversionDefinition

    name = factory.Sequence(lambda n: f"Conversion {n}")
    event = "purchase"
    lookback = timedelta(days=7)
    value_property = "amount"


def touch(recipient, channel: str, at, *, status: str = MessageStatus.DELIVERED, **fields) -> Message:
    """A message that reached (or not) `recipient` on `channel` at `at` (delivered_at = at)."""
    reached = status in (MessageStatus.DELIVERED, MessageStatus.OPENED, MessageStatus.CLICKED)
    return MessageFactory(
        recipient=recipient,
        channel=channel,
        status=status,
        created_at=at - timedelta(minutes=1),
        sent_at=at - timedelta(seconds=30) if reached else at,
        delivered_at=at if reached else None,
        **fields,
    )
