"""Next best channel for `auto` sends (the Journeys issue refines the scoring)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import Channel, Recipient

_FALLBACK_ORDER = (Channel.PUSH, Channel.EMAIL, Channel.IN_APP, Channel.SMS)


@dataclass(frozen=True)
class ChannelChoice:
    channel: str
    reason: str


def channel_choose(
    *,
    recipient: Recipient,
    purpose: str,
    content: Mapping[str, Any],
    reachable: set[str],
    avoid: frozenset[str],
    at: datetime,
) -> ChannelChoice | None:
    """Pick a channel the recipient can be reached on, or None."""
    for channel in _FALLBACK_ORDER:
        if channel in reachable and channel not in avoid:
            return ChannelChoice(channel, f"first reachable channel ({channel})")
    return None
