"""The governor's decision (the Governor issue replaces this accept-all placeholder)."""

from __future__ import annotations

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
