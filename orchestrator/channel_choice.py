"""Next best channel for `auto` sends.

Among the channels the recipient can be reached on and has not opted out of for this purpose, score how
well each channel's job fits the message (urgency by purpose, length, shape of the content), add the
recipient's recent engagement per channel, and step away from channels already used in this journey
(`avoid`) or already busy today. The winner comes with a plain-language reason that is stored on the
Message (`channel_reason`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True)
class ChoiceRequest:
    """One `auto` send to place (for the set-based variant)."""

    recipient_id: int
    purpose: str
    content: Mapping[str, Any]
    reachable: frozenset[str]
    avoid: frozenset[str] = frozenset()


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
    request = ChoiceRequest(recipient.pk, purpose, content, frozenset(reachable), frozenset(avoid))
    return channels_choose_bulk(requests=[request], at=at)[0]


def channels_choose_bulk(*, requests: Sequence[ChoiceRequest], at: datetime) -> list[ChannelChoice | None]:
    """`channel_choose` for many sends at once (a journey batch): two queries whatever the count."""
    if not requests:
        return []
    ids = {r.recipient_id for r in requests}
    opted_out: dict[tuple[int, str], set[str]] = defaultdict(set)
    for rid, channel, purpose in Preference.objects.filter(recipient_id__in=ids, opted_in=False).values_list(
        "recipient_id", "channel", "purpose"
    ):
        opted_out[(rid, purpose)].add(channel)
    engaged: dict[tuple[int, str], int] = {}
    today: dict[tuple[int, str], int] = {}
    rows = (
        Message.objects.filter(recipient_id__in=ids, created_at__gte=at - ENGAGEMENT_WINDOW)
        .values("recipient_id", "channel")
        .annotate(
            engaged=Count("id", filter=Q(status__in=ENGAGED_STATUSES)),
            today=Count(
                "id", filter=Q(status__in=list(CLEARED_STATUSES), created_at__gte=at - timedelta(hours=24))
            ),
        )
    )
    for row in rows:
        key = (row["recipient_id"], row["channel"])
        engaged[key], today[key] = row["engaged"], row["today"]
    return [
        _choose(r, opted_out[(r.recipient_id, r.purpose)], engaged=engaged, today=today) for r in requests
    ]


def _choose(
    r: ChoiceRequest,
    opted_out: set[str],
    *,
    engaged: dict[tuple[int, str], int],
    today: dict[tuple[int, str], int],
) -> ChannelChoice | None:
    fit = PURPOSE_FIT.get(r.purpose, PURPOSE_FIT[Purpose.ENGAGEMENT])
    candidates = [c for c in Channel.values if c in r.reachable and c not in opted_out and fit.get(c, 0) > 0]
    if not candidates:
        return None
    scored = []
    for order, channel in enumerate(candidates):
        score = fit[channel] * 10
        notes = []
        length_score, length_note = _length_fit(channel, r.content)
        score += length_score * 10
        if length_note:
            notes.append(length_note)
        n_engaged = engaged.get((r.recipient_id, channel), 0)
        if n_engaged:
            score += min(n_engaged, 5) * 6
            notes.append(f"opened or clicked {n_engaged} recent message{'s' if n_engaged != 1 else ''} there")
        n_today = today.get((r.recipient_id, channel), 0)
        if n_today >= NEAR_CAP_24H[channel]:
            score -= 40
            notes.append(f"already {n_today} {_LABEL[channel]} message{'s' if n_today != 1 else ''} today")
        if channel in r.avoid:
            score -= 50
            notes.append("already used in this journey")
        scored.append((score, -order, channel, notes))
    scored.sort(reverse=True)
    score, _, channel, notes = scored[0]
    why = [f"{_LABEL[channel]} fits {r.purpose} best among {', '.join(_LABEL[c] for c in candidates)}"]
    why += notes
    passed = [f"{_LABEL[c]}: {'; '.join(n)}" for s, _, c, n in scored[1:] if n]
    reason = "; ".join(why)
    if passed:
        reason += f" (passed over {' | '.join(passed)})"
    if opted_out & r.reachable:
        out = ", ".join(sorted(_LABEL[c] for c in opted_out & r.reachable))
        reason += f"; opted out of {out} for {r.purpose}"
    return ChannelChoice(channel, reason)
