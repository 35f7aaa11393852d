"""Next best channel for `auto` sends.

Among the channels the recipient can be reached on and has not opted out of for this purpose, each
candidate is judged with what the team edits, never fixed numbers: its channel policy (how well its job
fits the purpose, and the lint — a message too long for a push is not a push), the governor's own dry run
(can it go now, or would a live cap rule, a pause or quiet hours hold it), the recipient's recent
engagement there, and whether this journey already used it. Channels that can go now rank above channels
that would wait; within a tier, the best fit wins. The reason is stored on the Message (`channel_reason`):
"email can go now: fits engagement 6/10; push would wait for quiet hours until 08:00 Europe/Paris".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count

from channels_app.lint import PolicyView, Severity, channel_policy_views, message_lint
from governor.decision import MessageDraft, zone
from governor.policy import local_text, policy_current
from governor.services import decisions_preview_bulk
from orchestrator.snapshot import snapshot_current

from .models import Channel, Message, MessageStatus, Preference, Recipient

ENGAGEMENT_WINDOW = timedelta(days=30)
ENGAGED_STATUSES = (MessageStatus.OPENED, MessageStatus.CLICKED)
_LABEL = {c.value: c.label.lower() if c != Channel.SMS else "SMS" for c in Channel}
_TIER = {MessageStatus.ACCEPTED: 2, MessageStatus.DEFERRED: 1}


@dataclass(frozen=True)
class ChannelChoice:
    channel: str
    reason: str


@dataclass(frozen=True)
class ChoiceRequest:
    """One `auto` send to place."""

    recipient_id: int
    purpose: str
    content: Mapping[str, Any]
    reachable: frozenset[str]
    avoid: frozenset[str] = frozenset()
    priority: int = 50
    expires_at: datetime | None = None
    deliver_after: datetime | None = None


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


def channels_choose_bulk(
    *,
    requests: Sequence[ChoiceRequest],
    at: datetime,
    policies: Mapping[str, PolicyView] | None = None,
) -> list[ChannelChoice | None]:
    """`channel_choose` for many sends at once (a journey batch, a campaign): a handful of queries
    whatever the count — opt-outs, recent engagement, and one set-based governor dry run."""
    if not requests:
        return []
    snapshot = snapshot_current()  # one read of the settings for the whole batch
    policies = policies or channel_policy_views(snapshot)
    governor = policy_current(snapshot)
    ids = {r.recipient_id for r in requests}
    opted_out: dict[tuple[int, str], set[str]] = defaultdict(set)
    for rid, channel, purpose in Preference.objects.filter(recipient_id__in=ids, opted_in=False).values_list(
        "recipient_id", "channel", "purpose"
    ):
        opted_out[(rid, purpose)].add(channel)
    engaged = {
        (row["recipient_id"], row["channel"]): row["n"]
        for row in Message.objects.filter(
            recipient_id__in=ids, created_at__gte=at - ENGAGEMENT_WINDOW, status__in=ENGAGED_STATUSES
        )
        .values("recipient_id", "channel")
        .annotate(n=Count("id"))
    }

    # Candidates per request: reachable, not opted out, a job that fits, content the lint accepts.
    candidates: list[list[tuple[str, list[str]]]] = []
    passed: list[list[str]] = []
    drafts: list[MessageDraft] = []
    for r in requests:
        mine, out = [], []
        for channel in Channel.values:
            policy = policies.get(channel)
            if channel not in r.reachable or policy is None:
                continue
            if channel in opted_out[(r.recipient_id, r.purpose)]:
                out.append(f"{_LABEL[channel]}: opted out of {r.purpose}")
                continue
            if policy.fit(r.purpose) <= 0:
                out.append(f"{_LABEL[channel]}: not for {r.purpose}")
                continue
            violations = message_lint(channel=channel, purpose=r.purpose, content=r.content, policy=policy)
            blocking = [v.code for v in violations if v.severity == Severity.BLOCK]
            if blocking:
                out.append(f"{_LABEL[channel]}: {', '.join(blocking)}")
                continue
            warnings = [v.code for v in violations]
            mine.append((channel, warnings))
            drafts.append(
                MessageDraft(
                    recipient_id=r.recipient_id,
                    channel=channel,
                    purpose=r.purpose,
                    content={},
                    priority=r.priority,
                    expires_at=r.expires_at,
                    deliver_after=r.deliver_after,
                    shelf_life=policy.default_ttl if r.expires_at is None else None,
                )
            )
        candidates.append(mine)
        passed.append(out)

    preview = decisions_preview_bulk(drafts=drafts, at=at, policy=governor)
    previews, tz = iter(preview.decisions), preview.timezones
    quiet_names = {q.name for q in governor.quiet}
    choices: list[ChannelChoice | None] = []
    for r, mine, out in zip(requests, candidates, passed, strict=True):
        scored = []
        for order, (channel, warnings) in enumerate(mine):
            decision = next(previews)
            policy = policies[channel]
            fit = policy.fit(r.purpose)
            notes = [f"fits {r.purpose} {fit}/10"]
            score = fit * 10
            n_engaged = engaged.get((r.recipient_id, channel), 0)
            if n_engaged:
                score += min(n_engaged, 5) * 6
                notes.append(
                    f"opened or clicked {n_engaged} recent message{'s' if n_engaged != 1 else ''} there"
                )
            if channel in r.avoid:
                score -= 50
                notes.append("already used in this journey")
            if warnings:
                score -= 5 * len(warnings)
                notes.append(f"lint warns {', '.join(warnings)}")
            tier = _TIER.get(decision.status)
            if tier is None:  # suppressed, or it would expire before it could go
                out.append(f"{_LABEL[channel]} {_held_text(decision, quiet_names, tz, r, at)}")
                continue
            scored.append((tier, score, -order, channel, notes, decision))
        if not scored:
            choices.append(None)
            continue
        scored.sort(key=lambda s: s[:3], reverse=True)
        tier, _, _, channel, notes, decision = scored[0]
        if tier == 2:
            head = f"{_LABEL[channel]} can go now: {'; '.join(notes)}"
        else:
            held = _held_text(decision, quiet_names, tz, r, at)
            head = f"{_LABEL[channel]} {held} (no channel can go now): {'; '.join(notes)}"
        others = [
            f"{_LABEL[c]} {'can go now' if t == 2 else _held_text(d, quiet_names, tz, r, at)}"
            + (f" ({'; '.join(n[1:])})" if len(n) > 1 else "")
            for t, _, _, c, n, d in scored[1:]
        ]
        reason = "; ".join([head, *others, *out])
        choices.append(ChannelChoice(channel, reason))
    return choices


def _held_text(decision, quiet_names, tz: Mapping[int, str], r: ChoiceRequest, at: datetime) -> str:
    """'would wait for quiet hours until 08:00 Europe/Paris (07:00 UTC)', 'is paused', ..."""
    if decision.status == MessageStatus.SUPPRESSED:
        return f"is suppressed ({decision.reason.rstrip('.')})"
    if decision.status == MessageStatus.EXPIRED:
        return f"would expire before it could go ({decision.rule or 'expiry'})"
    if decision.rule == "channel pause":
        return "is paused"
    if decision.rule in quiet_names:
        what = "quiet hours"
    elif decision.rule == "deliver_after":
        what = "the requested time"
    else:
        what = f"the cap “{decision.rule}”"
    when = local_text(decision.deliver_after, zone(tz.get(r.recipient_id, "UTC")), at)
    return f"would wait for {what} until {when}"
