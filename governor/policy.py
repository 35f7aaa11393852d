"""The governor's policy in memory and the pure decision over it (no database access here).

The enabled cap rules, quiet hours, active pauses and the global holdout are a part of the per-process
settings snapshot (orchestrator.snapshot): read once, reused by every decision, reloaded in every process
as soon as the team edits any of them (a version checked once per request, never a timer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from orchestrator.models import Channel, MessageStatus, Purpose
from orchestrator.text import duration_text

from .holdout import GLOBAL_SCOPE, holdout_assigned
from .models import CapRule, ChannelPause, GlobalHoldout, PauseMode, QuietHours

PURPOSE_ORDER = {p: i for i, p in enumerate(Purpose.values)}
CHANNEL_ORDER = {c: i for i, c in enumerate(Channel.values)}


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    limit: int
    window: timedelta
    channels: frozenset[str]
    purposes: frozenset[str]

    def applies_to(self, channel: str, purpose: str) -> bool:
        return purpose in self.purposes and (not self.channels or channel in self.channels)

    def describe(self, used: int, ahead: int = 0) -> str:
        """'3 of 3 engagement+promotional messages in the last 24 h across all channels'."""
        purposes = "+".join(sorted(self.purposes, key=PURPOSE_ORDER.get))
        if self.channels:
            scope = "on " + "+".join(sorted(self.channels, key=CHANNEL_ORDER.get))
        else:
            scope = "across all channels"
        waiting = f" (incl. {ahead} waiting ahead of it)" if ahead else ""
        return (
            f"{used} of {self.limit} {purposes} messages in the last {duration_text(self.window)} "
            f"{scope}{waiting}"
        )


@dataclass(frozen=True)
class Quiet:
    id: int
    name: str
    channels: frozenset[str]
    start: time
    end: time
    exempt: frozenset[str]

    def applies_to(self, channel: str, purpose: str) -> bool:
        return purpose not in self.exempt and (not self.channels or channel in self.channels)

    def end_if_inside(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        """The end of the window `at` falls in (recipient-local wall clock), or None when outside.

        Start is inclusive, end exclusive. The end is built as a local wall time on the right date and
        converted with zoneinfo, so it stays 08:00 local on either side of a DST change.
        """
        local = at.astimezone(tz)
        now = local.time().replace(tzinfo=None)
        day = local.date()
        if self.start < self.end:
            if not self.start <= now < self.end:
                return None
        elif now >= self.start:
            day += timedelta(days=1)
        elif now >= self.end:
            return None
        end = datetime.combine(day, self.end, tzinfo=tz).astimezone(UTC)
        return end if end > at else None


@dataclass(frozen=True)
class Holdout:
    """The global holdout in force: `share` of recipients get none of `purposes`."""

    share: Decimal
    purposes: frozenset[str]

    def holds(self, *, recipient_id: int, purpose: str) -> bool:
        return purpose in self.purposes and holdout_assigned(
            scope=GLOBAL_SCOPE, recipient_id=recipient_id, share=self.share
        )


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    quiet: tuple[Quiet, ...]
    pauses: dict[str, str] = field(default_factory=dict)  # channel -> PauseMode
    holdout: Holdout | None = None
    _rules_by: dict[tuple[str, str], list[Rule]] = field(default_factory=dict, compare=False, repr=False)

    def rules_for(self, channel: str, purpose: str) -> list[Rule]:
        key = (channel, purpose)
        found = self._rules_by.get(key)
        if found is None:
            found = self._rules_by[key] = [r for r in self.rules if r.applies_to(channel, purpose)]
        return found

    def uncapped(self) -> Policy:
        """The same pauses without caps or quiet hours: for replies the recipient asked for (STOP/HELP)."""
        return Policy(rules=(), quiet=(), pauses=self.pauses, holdout=self.holdout)

    @property
    def max_window(self) -> timedelta:
        return max((r.window for r in self.rules), default=timedelta(0))


def policy_load() -> Policy:
    """Read the enabled rules, quiet hours, active pauses and the global holdout (four small queries):
    the snapshot's loader, the only reader of those tables on the send path."""
    rules = tuple(
        Rule(r.pk, r.name, r.limit, r.window, frozenset(r.channels), frozenset(r.purposes))
        for r in CapRule.objects.filter(enabled=True).order_by("pk")
    )
    quiet = tuple(
        Quiet(q.pk, q.name, frozenset(q.channels), q.start, q.end, frozenset(q.exempt_purposes))
        for q in QuietHours.objects.filter(enabled=True).order_by("pk")
    )
    pauses = dict(ChannelPause.objects.filter(resumed_at__isnull=True).values_list("channel", "mode"))
    held = GlobalHoldout.current()
    holdout = Holdout(held.share, frozenset(held.purposes)) if held.share > 0 and held.purposes else None
    return Policy(rules=rules, quiet=quiet, pauses=pauses, holdout=holdout)


SNAPSHOT_PART = "governor.policy"


def policy_current(snapshot=None) -> Policy:
    """The governor's policy from the settings snapshot (current as of this request), or from the given
    one (a caller reading several parts takes the snapshot once)."""
    from orchestrator.snapshot import snapshot_current

    return (snapshot or snapshot_current()).part(SNAPSHOT_PART)


def policy_cache_clear(**_kwargs) -> None:
    """Forget this process's settings snapshot (tests; edits invalidate it through the version)."""
    from orchestrator.snapshot import snapshot_clear

    snapshot_clear()


# ---- the decision -------------------------------------------------------------------------------


@dataclass
class RuleUse:
    """One rule's use for one recipient at the decision time.

    `count`/`oldest`: cleared messages in (at - window, at] from the history; `ahead`: messages that
    count as if taken at `at` (due deferred messages ahead in the queue, earlier accepts in this batch).
    """

    count: int = 0
    oldest: datetime | None = None
    ahead: int = 0
    taken: int = 0  # cleared earlier in the same batch (history at `at`)


@dataclass(frozen=True)
class Decision:
    """The outcome, the deciding rule and the plain reason, with the numbers behind it: for a cap, `used`
    of `limit` in `window` and the `next_slot`; for quiet hours the window's end as `next_slot`. An accepted
    message carries the numbers of its tightest cap (counting itself). `expires_at` is the expiry the
    message gets (the caller's, or the channel's shelf life counted from when it may first go out)."""

    status: str
    rule: str = ""
    reason: str = ""
    deliver_after: datetime | None = None
    expires_at: datetime | None = None
    used: int | None = None
    limit: int | None = None
    window: timedelta | None = None
    next_slot: datetime | None = None

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "rule": self.rule,
            "reason": self.reason,
            "deliver_after": self.deliver_after,
            "used": self.used,
            "limit": self.limit,
            "window": self.window,
            "next_slot": self.next_slot,
        }

    def record(self, *, at: datetime) -> dict:
        """The fields of its MessageDecision row."""
        return {
            "at": at,
            "outcome": self.status,
            "rule": self.rule,
            "reason": self.reason,
            "used": self.used,
            "limit": self.limit,
            "window": self.window,
            "next_slot": self.next_slot,
        }


def when_text(t: datetime, at: datetime) -> str:
    t = t.astimezone(UTC)
    return f"{t:%H:%M} UTC" if t.date() == at.astimezone(UTC).date() else f"{t:%Y-%m-%d %H:%M} UTC"


def local_text(t: datetime, tz: ZoneInfo, at: datetime) -> str:
    """'23:30 Europe/Paris (22:30 UTC)': the recipient's wall clock first, then UTC."""
    local = t.astimezone(tz)
    if tz.key == "UTC":
        return when_text(t, at)
    day = "" if local.date() == at.astimezone(tz).date() else f"{local:%Y-%m-%d} "
    return f"{day}{local:%H:%M} {tz.key} ({when_text(t, at)})"


def quiet_push(
    policy: Policy, *, t: datetime, tz: ZoneInfo, channel: str, purpose: str
) -> tuple[datetime, Quiet | None]:
    """Move `t` past every quiet window it falls in; returns the new time and the last window hit."""
    hit = None
    for _ in range(4):  # windows may abut or overlap; a few rounds settle it
        moved = False
        for q in policy.quiet:
            if q.applies_to(channel, purpose):
                end = q.end_if_inside(t, tz)
                if end is not None:
                    t, hit, moved = end, q, True
        if not moved:
            break
    return t, hit


KthOldest = Callable[[Rule, int], datetime]

GLOBAL_HOLDOUT_RULE = "global holdout"


def global_holdout_decision(policy: Policy, *, recipient_id: int | None, purpose: str) -> Decision | None:
    """Suppressed when the recipient is in the global holdout for this purpose, else None.

    The one check behind the global holdout: every governed send passes it (the journeys' own holdouts
    are applied before a send is built, in the journey scheduler).
    """
    holdout = policy.holdout
    if (
        holdout is None
        or recipient_id is None
        or not holdout.holds(recipient_id=recipient_id, purpose=purpose)
    ):
        return None
    return Decision(
        MessageStatus.SUPPRESSED,
        GLOBAL_HOLDOUT_RULE,
        f"The recipient is in the global holdout ({float(holdout.share) * 100:g} % of recipients get no "
        f"{'/'.join(sorted(holdout.purposes, key=PURPOSE_ORDER.get))} messages, to measure the lift).",
    )


def decide(
    policy: Policy,
    *,
    tz: ZoneInfo,
    opted_out: bool,
    channel: str,
    purpose: str,
    expires_at: datetime | None,
    deliver_after: datetime | None,
    at: datetime,
    uses: dict[int, RuleUse],
    kth_oldest: KthOldest,
    shelf_life: timedelta | None = None,
    recipient_id: int | None = None,
) -> Decision:
    """The governor's decision for one message, from its inputs only (reproducible, no I/O but
    `kth_oldest`, asked only when a recipient is over a cap by more than one message).

    `shelf_life` (the channel's default, used when `expires_at` is None) counts from when the message may
    first go out: its requested time, pushed past quiet hours. So a push that quiet hours hold overnight
    is still worth sending at 08:00, while one that a cap holds past its shelf life expires.
    """
    if expires_at is not None and expires_at <= at:
        return Decision(MessageStatus.EXPIRED, "expiry", f"Expired at {when_text(expires_at, at)}.")
    held_out = global_holdout_decision(policy, recipient_id=recipient_id, purpose=purpose)
    if held_out is not None:
        return held_out
    if opted_out:
        return Decision(
            MessageStatus.SUPPRESSED,
            "preferences",
            f"The recipient opted out of {purpose} messages on {channel}.",
        )
    pause = policy.pauses.get(channel)
    if pause == PauseMode.SUPPRESS:
        return Decision(MessageStatus.SUPPRESSED, "channel pause", "channel paused")
    requested = deliver_after if deliver_after is not None and deliver_after > at else None
    if pause == PauseMode.DEFER:
        # Held with no time (resuming makes it due); a caller's later requested time is kept.
        if expires_at is None and shelf_life is not None:
            expires_at = (requested or at) + shelf_life
        return Decision(
            MessageStatus.DEFERRED,
            "channel pause",
            "channel paused; held until the channel is resumed",
            requested,
            expires_at=expires_at,
        )

    # When it may first go out, caps aside: the requested time, past any quiet window.
    first, quiet = quiet_push(policy, t=requested or at, tz=tz, channel=channel, purpose=purpose)
    if expires_at is None and shelf_life is not None:
        expires_at = first + shelf_life

    if requested is not None:
        # Caps are judged when the requested time comes; quiet hours are known already.
        reason = f"Held until the requested time {when_text(requested, at)}"
        if quiet is not None:
            reason += f", then quiet hours {_quiet_text(quiet, first, tz, at)}"
        return _deferred_or_expired(
            first,
            expires_at,
            at,
            tz,
            quiet.name if quiet else "deliver_after",
            reason,
            next_slot=first,
        )

    blocked: list[tuple[datetime, Rule, str, int]] = []
    tightest: tuple[float, Rule, int] | None = None
    within: list[str] = []
    for rule in policy.rules_for(channel, purpose):
        use = uses.get(rule.id) or RuleUse()
        used = use.count + use.taken + use.ahead
        if used < rule.limit:
            within.append(rule.describe(used + 1))
            share = (used + 1) / rule.limit
            if tightest is None or share > tightest[0]:
                tightest = (share, rule, used + 1)
            continue
        # The slot frees when enough of the oldest leave the window: the k-th oldest plus the window.
        k = used - rule.limit + 1
        if k > use.count:
            oldest = at  # the ones taken at `at` leave last
        elif k == 1 and use.oldest is not None:
            oldest = use.oldest
        else:
            oldest = kth_oldest(rule, k)
        free = max(oldest + rule.window, at)
        blocked.append((free, rule, rule.describe(used, use.ahead), used))

    t = at
    rule_name, reason = "", ""
    numbers: dict = {}
    if blocked:
        free, rule, text, used = max(blocked, key=lambda b: (b[0], b[1].id))
        t, rule_name = free, rule.name
        reason = f"{text}; next slot at {when_text(free, at)}"
        numbers = {"used": used, "limit": rule.limit, "window": rule.window}
    t2, quiet = quiet_push(policy, t=t, tz=tz, channel=channel, purpose=purpose)
    if quiet is not None:
        if blocked:
            reason += f", then quiet hours {_quiet_text(quiet, t2, tz, at)}"
        else:
            rule_name, reason = quiet.name, f"Quiet hours {_quiet_text(quiet, t2, tz, at)}"
    if t2 == at:
        if within:
            reason = "Within every cap, counting this one: " + "; ".join(within) + "."
        else:
            reason = f"No cap applies to {purpose} messages on {channel}."
        if tightest is not None:
            _, rule, used = tightest
            numbers = {"used": used, "limit": rule.limit, "window": rule.window}
        return Decision(MessageStatus.ACCEPTED, "", reason, expires_at=expires_at, **numbers)
    return _deferred_or_expired(t2, expires_at, at, tz, rule_name, reason, next_slot=t2, **numbers)


def _quiet_text(quiet: Quiet, end: datetime, tz: ZoneInfo, at: datetime) -> str:
    local = end.astimezone(tz)
    return (
        f"{quiet.start:%H:%M}–{quiet.end:%H:%M} in {tz.key}; deferred to {local:%H:%M} local "
        f"({when_text(end, at)})"
    )


def _deferred_or_expired(
    t: datetime,
    expires_at: datetime | None,
    at: datetime,
    tz: ZoneInfo,
    rule: str,
    reason: str,
    **numbers,
) -> Decision:
    if expires_at is not None and t > expires_at:
        return Decision(
            MessageStatus.EXPIRED,
            rule,
            f"{reason}; it expires at {local_text(expires_at, tz, at)} first, so it will not be sent.",
            expires_at=expires_at,
            **numbers,
        )
    return Decision(MessageStatus.DEFERRED, rule, reason, t, expires_at=expires_at, **numbers)
