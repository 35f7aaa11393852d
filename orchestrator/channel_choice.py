"""Next best channel for `auto` sends.

Among the channels the recipient can be reached on and has not opted out of for this purpose, score how
well each channel's job fits the message (urgency by purpose, length, shape of the content), add the
recipient's recent engagement per channel, and step away from channels already used in this journey
(`avoid`) or already busy today. The winner comes with a plain-language reason that is stored on the
Message (`channel_reason`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q

from .models import CLEARED_STATUSES, Channel, Message, MessageStatus, Preference, Purpose, Recipient


@dataclass(frozen=True)
class ChannelChoice:
    channel: str
    reason: str


# How well each channel's job fits each purpose (0-10): push is urgent, email patient, in-app contextual,
# SMS intimate (transactional confirmations and rare alerts only: 0 elsewhere means never).
PURPOSE_FIT: dict[str, dict[str, int]] = {
    Purpose.TRANSACTIONAL: {Channel.EMAIL: 8, Channel.PUSH: 7, Channel.SMS: 6, Channel.IN_APP: 4},
    Purpose.ALERT: {Channel.PUSH: 9, Channel.SMS: 8, Channel.EMAIL: 6, Channel.IN_APP: 3},
    Purpose.ENGAGEMENT: {Channel.PUSH: 7, Channel.EMAIL: 6, Channel.IN_APP: 6, Channel.SMS: 0},
    Purpose.PROMOTIONAL: {Channel.EMAIL: 8, Channel.IN_APP: 6, Channel.PUSH: 4, Channel.SMS: 0},
}
PUSH_MAX_CHARS = 178  # beyond this a push is truncated on most lock screens
LONG_CHARS = 500  # a message this long wants email's room
ENGAGEMENT_WINDOW = timedelta(days=30)
# Messages cleared on a channel in the last 24 h at which the channel counts as "near its cap today".
NEAR_CAP_24H: dict[str, int] = {Channel.PUSH: 2, Channel.EMAIL: 2, Channel.IN_APP: 3, Channel.SMS: 1}
ENGAGED_STATUSES = (MessageStatus.OPENED, MessageStatus.CLICKED)
_LABEL = {c.value: c.label.lower() if c != Channel.SMS else "SMS" for c in Channel}


def _length_fit(channel: str, content: Mapping[str, Any]) -> tuple[int, str]:
    text = " ".join(str(content.get(k) or "") for k in ("subject", "title", "body")).strip()
    n = len(text)
    if channel == Channel.PUSH and n > PUSH_MAX_CHARS:
        return -8, f"too long for a push ({n} characters)"
    if channel == Channel.SMS and n > 160:
        return -6, f"too long for one SMS ({n} characters)"
    if channel == Channel.EMAIL and n > LONG_CHARS:
        return 3, "long content reads best in email"
    if channel == Channel.EMAIL and content.get("subject"):
        return 1, "written as an email (has a subject)"
    if channel in (Channel.PUSH, Channel.IN_APP) and content.get("action_url") and n <= PUSH_MAX_CHARS:
        return 1, "short, with one action"
    return 0, ""


def channel_choose(
    *,
    recipient: Recipient,
    purpose: str,
    content: Mapping[str, Any],
    reachable: set[str],
    avoid: frozenset[str],
    at: datetime,
) -> ChannelChoice | None:
    """Pick the channel whose job fits this message best for this recipient now, or None."""
    fit = PURPOSE_FIT.get(purpose, PURPOSE_FIT[Purpose.ENGAGEMENT])
    opted_out = set(
        Preference.objects.filter(recipient=recipient, purpose=purpose, opted_in=False).values_list(
            "channel", flat=True
        )
    )
    candidates = [c for c in Channel.values if c in reachable and c not in opted_out and fit.get(c, 0) > 0]
    if not candidates:
        return None

    stats = Message.objects.filter(recipient=recipient, channel__in=candidates).aggregate(
        **{
            f"engaged_{c}": Count(
                "id", filter=Q(channel=c, status__in=ENGAGED_STATUSES, created_at__gte=at - ENGAGEMENT_WINDOW)
            )
            for c in candidates
        },
        **{
            f"today_{c}": Count(
                "id",
                filter=Q(
                    channel=c, status__in=list(CLEARED_STATUSES), created_at__gte=at - timedelta(hours=24)
                ),
            )
            for c in candidates
        },
    )

    scored = []
    for order, channel in enumerate(candidates):
        score = fit[channel] * 10
        notes = []
        length_score, length_note = _length_fit(channel, content)
        score += length_score * 10
        if length_note:
            notes.append(length_note)
        engaged = stats[f"engaged_{channel}"]
        if engaged:
            score += min(engaged, 5) * 6
            notes.append(f"opened or clicked {engaged} recent message{'s' if engaged != 1 else ''} there")
        today = stats[f"today_{channel}"]
        if today >= NEAR_CAP_24H[channel]:
            score -= 40
            notes.append(f"already {today} {_LABEL[channel]} message{'s' if today != 1 else ''} today")
        if channel in avoid:
            score -= 50
            notes.append("already used in this journey")
        scored.append((score, -order, channel, notes))
    scored.sort(reverse=True)
    score, _, channel, notes = scored[0]
    why = [f"{_LABEL[channel]} fits {purpose} best among {', '.join(_LABEL[c] for c in candidates)}"]
    why += notes
    passed = [f"{_LABEL[c]}: {'; '.join(n)}" for s, _, c, n in scored[1:] if n]
    reason = "; ".join(why)
    if passed:
        reason += f" (passed over {' | '.join(passed)})"
    if opted_out & reachable:
        reason += (
            f"; opted out of {', '.join(sorted(_LABEL[c] for c in opted_out & reachable))} for {purpose}"
        )
    return ChannelChoice(channel, reason)
