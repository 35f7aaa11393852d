"""Reads for channels: policies, the inbox, dead letters."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet

from orchestrator.models import Channel, Message, MessageStatus, Recipient, Source

from .lint import channel_policy_view


def channel_default_ttl(*, channel: str) -> timedelta | None:
    """How long a message on this channel stays worth sending when the caller gives no expires_at."""
    return channel_policy_view(channel=channel).default_ttl


def inbox_waiting(*, recipient: Recipient) -> QuerySet[Message]:
    """In-app messages queued for the recipient's next visit (not ones another system showed: recorded
    sends are history, never delivered here)."""
    return Message.objects.filter(
        recipient=recipient, channel=Channel.IN_APP, status=MessageStatus.SENT
    ).exclude(source=Source.EXTERNAL)
