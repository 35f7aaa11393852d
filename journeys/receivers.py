"""Signal receivers: product events drive triggers, goals and waits; message status changes wake the
enrollment waiting for a deferred send."""

from __future__ import annotations

from django.db import transaction
from django.dispatch import receiver
from django_q.tasks import async_task

from orchestrator.models import Event, Message, MessageStatus, Source
from orchestrator.signals import event_ingested, message_status_changed

from . import services


@receiver(event_ingested, sender=Event, dispatch_uid="journeys.event_ingested")
def on_event_ingested(sender, event: Event, **kwargs) -> None:
    services.event_apply(event=event, now=event.received_at)


@receiver(message_status_changed, sender=Message, dispatch_uid="journeys.message_status_changed")
def on_message_status_changed(sender, message: Message, previous: str = "", **kwargs) -> None:
    # Sent inside the governor's transaction (which holds the recipient's lock): only enqueue here.
    if message.source == Source.JOURNEY and previous == MessageStatus.DEFERRED:
        transaction.on_commit(lambda: async_task("journeys.tasks.message_wake_task", message.pk))
