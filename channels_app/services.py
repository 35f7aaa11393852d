"""Writes on message status outside the governor: provider results, receipts, the in-app inbox.

Every status change goes through `orchestrator.history.message_status_move`, which sets the
per-status timestamp and sends `message_status_changed` inside the caller's transaction. Statuses only
move forward (a receipt that arrives late never moves a message backwards); the one exception is an
operator's "retry now".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from orchestrator.history import message_status_move
from orchestrator.models import ENGAGEMENT_RANK, Message, MessageStatus, Recipient

from .selectors import inbox_waiting


class ReceiptType:
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    FAILED = "failed"
    SEEN = "seen"

    ALL = (DELIVERED, OPENED, CLICKED, BOUNCED, FAILED, SEEN)


RECEIPT_STATUS = {
    ReceiptType.DELIVERED: MessageStatus.DELIVERED,
    ReceiptType.OPENED: MessageStatus.OPENED,
    ReceiptType.SEEN: MessageStatus.OPENED,
    ReceiptType.CLICKED: MessageStatus.CLICKED,
    ReceiptType.BOUNCED: MessageStatus.FAILED,
    ReceiptType.FAILED: MessageStatus.FAILED,
}


@dataclass(frozen=True)
class ReceiptResult:
    message: Message
    applied: bool
    detail: str


def message_receipt_apply(
    *,
    message_id: int,
    type: str,  # noqa: A002 - the receipt's own word
    occurred_at: datetime | None = None,
    detail: str = "",
    now: datetime | None = None,
) -> ReceiptResult:
    """Apply one delivery/engagement receipt. Raises Message.DoesNotExist or ValueError (bad type).

    Forward moves apply; a late or out-of-order receipt only fills its own timestamp if it is empty.
    A click implies an open and a delivery, so their empty timestamps are filled too.
    """
    if type not in RECEIPT_STATUS:
        raise ValueError(f"Unknown receipt type {type!r}; expected one of {', '.join(ReceiptType.ALL)}.")
    now = now or timezone.now()
    at = occurred_at or now
    target = RECEIPT_STATUS[type]
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=message_id)
        current = message.status
        if target == MessageStatus.FAILED:
            if current in (MessageStatus.SENT, MessageStatus.DELIVERED):
                message.last_error = f"{type} receipt: {detail}".strip().rstrip(":")
                message.next_attempt_at = None
                message_status_move(
                    message=message,
                    status=MessageStatus.FAILED,
                    at=at,
                    update_fields=["last_error", "next_attempt_at"],
                )
                return ReceiptResult(message, True, f"{current} → failed")
            return ReceiptResult(message, False, f"a {type} receipt does not apply to a {current} message")

        if current not in ENGAGEMENT_RANK:
            return ReceiptResult(message, False, f"a {type} receipt does not apply to a {current} message")
        fills = []
        for status in (MessageStatus.DELIVERED, MessageStatus.OPENED, MessageStatus.CLICKED):
            if (
                ENGAGEMENT_RANK[status] <= ENGAGEMENT_RANK[target]
                and getattr(message, f"{status}_at") is None
                and status != target
            ):
                setattr(message, f"{status}_at", at)
                fills.append(f"{status}_at")
        if ENGAGEMENT_RANK[target] > ENGAGEMENT_RANK[current]:
            message_status_move(message=message, status=target, at=at, update_fields=fills)
            return ReceiptResult(message, True, f"{current} → {target}")
        stamp = f"{target}_at"
        if getattr(message, stamp) is None:
            setattr(message, stamp, at)
            fills.append(stamp)
        if fills:
            message.save(update_fields=[*fills, "updated_at"])
        return ReceiptResult(message, False, f"already {current}; a {type} receipt never moves it back")


def inbox_messages_deliver(*, recipient: Recipient, now: datetime | None = None) -> list[Message]:
    """The recipient is here: their queued in-app messages are shown, so they are delivered now.

    Returns the messages delivered by this visit (oldest first); ones past expires_at become expired.
    """
    now = now or timezone.now()
    with transaction.atomic():
        waiting = list(
            inbox_waiting(recipient=recipient).select_for_update(skip_locked=True).order_by("sent_at", "id")
        )
        shown = []
        for message in waiting:
            if message.expires_at is not None and message.expires_at <= now:
                message_status_move(message=message, status=MessageStatus.EXPIRED, at=now)
            else:
                shown.append(message_status_move(message=message, status=MessageStatus.DELIVERED, at=now))
        Recipient.objects.filter(pk=recipient.pk).update(last_seen_at=now)
    return shown


def channel_policies_restore(*, channels: Iterable[str]) -> int:
    """Put the shipped defaults back on these channels' policies (creating missing rows)."""
    from .defaults import DEFAULT_POLICIES
    from .models import ChannelPolicy

    restored = 0
    with transaction.atomic():
        for channel in channels:
            fields = DEFAULT_POLICIES.get(channel)
            if fields is None:
                continue
            blank = {
                f.name: f.get_default()
                for f in ChannelPolicy._meta.concrete_fields
                if f.name not in {"id", "channel", "updated_at"}
            }
            ChannelPolicy.objects.update_or_create(channel=channel, defaults={**blank, **fields})
            restored += 1
    return restored
