"""The governor's decision (the Governor issue replaces this accept-all placeholder)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from orchestrator.models import Message, MessageStatus, Recipient


def message_decide(
    *,
    recipient: Recipient,
    channel: str,
    purpose: str,
    content: dict[str, Any],
    priority: int,
    expires_at: datetime | None,
    deliver_after: datetime | None,
    source: str,
    source_ref: str,
    requested_channel: str,
    channel_reason: str,
    warnings: list[dict[str, str]],
    to_address: str = "",
    at: datetime,
) -> Message:
    """Decide and record one message in one transaction holding the recipient's row lock."""
    with transaction.atomic():
        Recipient.objects.select_for_update().filter(pk=recipient.pk).first()
        return Message.objects.create(
            recipient=recipient,
            channel=channel,
            purpose=purpose,
            content=content,
            priority=priority,
            expires_at=expires_at,
            deliver_after=deliver_after,
            source=source,
            source_ref=source_ref,
            requested_channel=requested_channel,
            channel_reason=channel_reason,
            warnings=warnings,
            to_address=to_address,
            status=MessageStatus.ACCEPTED,
            created_at=at,
            decided_at=at,
            accepted_at=at,
        )


@dataclass(frozen=True)
class MessageDraft:
    """A message ready for the governor: validated, channel chosen, linted."""

    recipient_id: int
    channel: str
    purpose: str
    content: dict[str, Any]
    priority: int = 50
    expires_at: datetime | None = None
    source: str = "api"
    source_ref: str = ""
    requested_channel: str = ""
    channel_reason: str = ""
    warnings: list[dict[str, str]] = field(default_factory=list)
    to_address: str = ""


def messages_decide_bulk(*, drafts: Sequence[MessageDraft], at: datetime) -> list[Message]:
    """Decide and record many messages at once, set-based (campaigns, due journey steps).

    Same decisions as message_decide for each draft, in input order per recipient; locks the recipients'
    rows in id order within one transaction. Returns the Messages in the order of `drafts`.
    """
    with transaction.atomic():
        ids = sorted({d.recipient_id for d in drafts})
        list(Recipient.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk"))
        return Message.objects.bulk_create(
            [
                Message(
                    recipient_id=d.recipient_id,
                    channel=d.channel,
                    purpose=d.purpose,
                    content=d.content,
                    priority=d.priority,
                    expires_at=d.expires_at,
                    source=d.source,
                    source_ref=d.source_ref,
                    requested_channel=d.requested_channel or d.channel,
                    channel_reason=d.channel_reason,
                    warnings=d.warnings,
                    to_address=d.to_address,
                    status=MessageStatus.ACCEPTED,
                    created_at=at,
                    decided_at=at,
                    accepted_at=at,
                )
                for d in drafts
            ]
        )
