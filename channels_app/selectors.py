"""Reads for channels: policies, the inbox, dead letters."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet

from orchestrator.models import Channel, Message, MessageStatus, Recipient

from .defaults import DEFAULT_POLICIES
from .models import ChannelPolicy


def channel_default_ttl(*, channel: str) -> timedelta | None:
    """How long a message on this channel stays worth sending when the caller gives no expires_at."""
    row = ChannelPolicy.objects.filter(channel=channel).values_list("default_ttl", flat=True).first()
    if row is None and not ChannelPolicy.objects.filter(channel=channel).exists():
        return DEFAULT_POLICIES.get(channel, {}).get("default_ttl")
    return row


def inbox_waiting(*, recipient: Recipient) -> QuerySet[Message]:
    """In-app messages queued for the recipient's next visit."""
    return Message.objects.filter(recipient=recipient, channel=Channel.IN_APP, status=MessageStatus.SENT)
