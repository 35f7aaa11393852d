"""Reactions to the conversation's signals (connected in ChannelsAppConfig.ready)."""

from __future__ import annotations

import threading

from anymail.signals import inbound as anymail_inbound
from anymail.signals import tracking as anymail_tracking
from django.db import transaction
from django.dispatch import receiver

from orchestrator.models import Event, Message, MessageStatus
from orchestrator.signals import event_ingested, message_status_changed, messages_created, recipient_erasing

from .delivery import deliveries_wake
from .esp import anymail_event_apply, anymail_inbound_apply
from .services import inbox_messages_deliver

# The product events that mean "the recipient is in the app now": their inbox is shown.
VISIT_EVENTS = frozenset({"app_open"})


class _DeliveryBatch:
    """The messages that became accepted in one transaction: delivery is woken once for them on commit."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.hooks: list | None = None  # the connection's on-commit list this batch's flush is in
        self.flushed = False

    def flush(self) -> None:
        self.flushed = True
        deliveries_wake(message_ids=self.ids)


_batches = threading.local()


@receiver(message_status_changed, sender=Message, dispatch_uid="channels_deliver_newly_accepted")
def deliver_newly_accepted(sender, message: Message, previous: str, **kwargs) -> None:
    """A message became accepted — a new one from any source (previous ""), the governor's re-drive, a
    dead-letter retry: deliver it after commit. The accepted messages are the delivery queue, so one
    robust on-commit hook per transaction wakes the delivery workers (a blast of 100k is one hook and one
    wake-up, not 100k tasks); if the broker is down the message stays recorded as accepted and the
    sweeper delivers it later."""
    if message.status != MessageStatus.ACCEPTED or previous == MessageStatus.ACCEPTED:
        return
    _deliver_on_commit([message.pk])


@receiver(messages_created, sender=Message, dispatch_uid="channels_deliver_created")
def deliver_created(sender, messages: list[Message], **kwargs) -> None:
    """Many new messages at once (a set-based insert): the accepted ones, as deliver_newly_accepted."""
    accepted = MessageStatus.ACCEPTED
    ids = [m.pk for m in messages if m.status == accepted]
    if ids:
        _deliver_on_commit(ids)


def _deliver_on_commit(ids: list[int]) -> None:
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        transaction.on_commit(lambda: deliveries_wake(message_ids=ids), robust=True)
        return
    batch = getattr(_batches, "current", None)
    # Django rebinds the on-commit list at every commit or rollback: a batch whose list is gone was
    # flushed or discarded (and one already flushed is done), so this transaction starts its own.
    if batch is None or batch.flushed or batch.hooks is not connection.run_on_commit:
        batch = _batches.current = _DeliveryBatch()
        transaction.on_commit(batch.flush, robust=True)
        batch.hooks = connection.run_on_commit
    batch.ids.extend(ids)


@receiver(event_ingested, sender=Event, dispatch_uid="channels_inbox_on_visit")
def inbox_on_visit(sender, event: Event, **kwargs) -> None:
    """An app_open is a visit: queued in-app messages are delivered now."""
    if event.name in VISIT_EVENTS:
        inbox_messages_deliver(recipient=event.recipient, now=event.received_at)


@receiver(anymail_tracking, dispatch_uid="channels_anymail_tracking")
def anymail_tracking_received(sender, event, esp_name: str, **kwargs) -> None:
    """An ESP's tracking webhook (through django-anymail): receipts, bounces, complaints."""
    anymail_event_apply(event=event, esp_name=esp_name)


@receiver(anymail_inbound, dispatch_uid="channels_anymail_inbound")
def anymail_inbound_received(sender, event, esp_name: str, **kwargs) -> None:
    """Inbound email (through django-anymail): the List-Unsubscribe mailto."""
    anymail_inbound_apply(event=event, esp_name=esp_name)


@receiver(recipient_erasing, dispatch_uid="channels_recipient_erasing")
def recipient_erasing_scrub(sender, recipient, counts: dict, **kwargs) -> None:
    """Delivery attempts keep their count and outcome; the provider's response (which may quote the
    address) and its message id (a key into the provider's own logs) go."""
    from .models import DeliveryAttempt

    counts["delivery_attempts"] = DeliveryAttempt.objects.filter(message__recipient_id=recipient.pk).update(
        response="", provider_message_id=""
    )
