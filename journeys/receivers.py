"""Signal receivers: product events drive triggers, goals and waits; message status changes wake the
enrollment waiting for a deferred send."""

from __future__ import annotations

from django.db import transaction
from django.dispatch import receiver
from django_q.tasks import async_task

from orchestrator.models import Event, Message, MessageStatus, Source
from orchestrator.signals import (
    event_ingested,
    message_status_changed,
    recipient_erase_locking,
    recipient_erasing,
)

from . import services


@receiver(event_ingested, sender=Event, dispatch_uid="journeys.event_ingested")
def on_event_ingested(sender, event: Event, **kwargs) -> None:
    services.event_apply(event=event, now=event.received_at)


@receiver(message_status_changed, sender=Message, dispatch_uid="journeys.message_status_changed")
def on_message_status_changed(sender, message: Message, previous: str = "", **kwargs) -> None:
    # Sent inside the governor's transaction (which holds the recipient's lock): only enqueue here.
    if message.source == Source.JOURNEY and previous == MessageStatus.DEFERRED:
        transaction.on_commit(lambda: async_task("journeys.tasks.message_wake_task", message.pk))


@receiver(recipient_erase_locking, dispatch_uid="journeys.recipient_erase_locking")
def on_recipient_erase_locking(sender, recipient_id: int, **kwargs) -> None:
    services.recipient_journeys_lock(recipient_id=recipient_id)


@receiver(recipient_erasing, dispatch_uid="journeys.recipient_erasing")
def on_recipient_erasing(sender, recipient, identifiers, at, counts: dict, **kwargs):
    """Enrollments, step runs and campaign members stay (the reports count them), without free text that
    may name the person; what is still running for them stops. Returns the event properties measurement
    reads, so conversion values and filtered conversions still add up."""
    return services.recipient_erase_journeys(
        recipient=recipient, identifiers=identifiers, at=at, counts=counts
    )
