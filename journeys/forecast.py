"""The review's forecast: a proposed journey replayed over the last days of real history, in memory.

What would have happened had the proposal been live for the last FORECAST_DAYS days: who would have
entered (its trigger events), what each enrollment would have sent and when (its waits, the events it
waits for, its goal), and what the governor would have said to each send, decided by the pure decision
core `governor.policy.decide` against each recipient's real cleared history plus the replay's own sends.
Then: how the added volume moves the share of recipients who reach a cap.

Reads only, set-based: the trigger events, the entering recipients' events, time zones, attributes,
contact points and opt-outs, and ONE ordered stream of every cleared message of the period (with a
bitmask of the cap rules each counts against, computed in SQL). Nothing is written.

Simplifications, said on the page: the real history is taken as it happened (the proposal's sends do
not re-decide the real messages after them); channel pauses are left out (a pause is temporary); an
`engaged` branch is never taken (replayed sends have no opens); `auto` takes the first reachable
channel the lint accepts that the enrollment has not used yet.
"""

from __future__ import annotations

import bisect
import operator
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction

from channels_app.lint import Severity, channel_policy_views, message_lint
from governor.policy import Policy, Rule, RuleUse, decide, policy_current
from orchestrator.models import (
    AUTO_CHANNEL,
    Channel,
    ContactPoint,
    Event,
    Message,
    MessageStatus,
    Preference,
    Recipient,
)
from orchestrator.snapshot import snapshot_current

from .definition import CompiledDefinition, definition_compile

CHUNK = 5000
AUTO_ORDER = ("push", "email", "in_app", "sms")
MAX_REDECIDE = 20
MAX_STEPS = 100


@dataclass
class Forecast:
    days: int
    since: datetime
    until: datetime
    trigger: str
    entered: int = 0
    recipients_entered: int = 0
    converted: int = 0
    sends: Counter = field(default_factory=Counter)  # sends that reached the governor, per channel
    cleared: Counter = field(default_factory=Counter)  # of those, cleared (now or after a deferral)
    unreachable: Counter = field(default_factory=Counter)  # no opted-in contact point on the channel
    deferred: Counter = field(default_factory=Counter)  # by deciding rule (a send deferred at least once)
    suppressed: Counter = field(default_factory=Counter)
    expired: Counter = field(default_factory=Counter)
    deferred_by_channel: Counter = field(default_factory=Counter)
    stopped_by_channel: Counter = field(default_factory=Counter)  # suppressed or expired
    still_deferred: int = 0  # deferred past the end of the replay window
    recipients_total: int = 0
    at_cap_before: int = 0  # recipients who reached any cap in the period, from the real history
    at_cap_after: int = 0  # ... with the replayed sends added
    rule_names: list[str] = field(default_factory=list)
    rule_before: Counter = field(default_factory=Counter)  # per rule name
    rule_after: Counter = field(default_factory=Counter)
    recipients_read: int = 0  # recipients with cleared history in the period (the stream's length)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def share_before(self) -> float:
        return self.at_cap_before / self.recipients_total if self.recipients_total else 0.0

    @property
    def share_after(self) -> float:
        return self.at_cap_after / self.recipients_total if self.recipients_total else 0.0

    @property
    def sends_total(self) -> int:
        return sum(self.sends.values())

    def decision_rows(self) -> list[tuple[str, str, int]]:
        """(what the governor said, the deciding rule, how many sends), most first within each outcome."""
        rows = []
        for outcome, counter in (
            ("deferred", self.deferred),
            ("suppressed", self.suppressed),
            ("expired", self.expired),
        ):
            rows += [(outcome, rule, n) for rule, n in counter.most_common()]
        return rows

    def rule_rows(self) -> list[dict[str, Any]]:
        total = self.recipients_total or 1
        return [
            {
                "rule": name,
                "before": self.rule_before[name],
                "after": self.rule_after[name],
                "share_before": self.rule_before[name] / total,
                "share_after": self.rule_after[name] / total,
            }
            for name in self.rule_names
        ]

    def channel_rows(self) -> list[dict[str, Any]]:
        """Per channel: sends, cleared, deferred first, stopped, no contact point (for the page)."""
        names = [c for c in Channel.values if self.sends[c] or self.unreachable[c]]
        names += [c for c in self.unreachable if c not in names]
        return [
            {
                "channel": c,
                "sends": self.sends[c],
                "cleared": self.cleared[c],
                "deferred": self.deferred_by_channel[c],
                "stopped": self.stopped_by_channel[c],
                "unreachable": self.unreachable[c],
            }
            for c in names
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "entered": self.entered,
            "recipients_entered": self.recipients_entered,
            "converted": self.converted,
            "sends": dict(self.sends),
            "cleared": dict(self.cleared),
            "unreachable": dict(self.unreachable),
            "deferred": dict(self.deferred),
            "suppressed": dict(self.suppressed),
            "expired": dict(self.expired),
            "still_deferred": self.still_deferred,
            "recipients_total": self.recipients_total,
            "at_cap_before": self.at_cap_before,
            "at_cap_after": self.at_cap_after,
            "rules_at_cap_before": dict(self.rule_before),
            "rules_at_cap_after": dict(self.rule_after),
        }


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


# ---- the history stream ----------------------------------------------------------------------------


def _epoch_sql(column: str) -> str:
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM {column})::float8"
    return f"(julianday({column}) - 2440587.5) * 86400.0"


def _mask_sql(rules: tuple[Rule, ...]) -> tuple[str, list]:
    """One small integer per message: bit n set when it counts against rule n."""
    parts, params = [], []
    for n, rule in enumerate(rules):
        cond = f"purpose IN ({', '.join(['%s'] * len(rule.purposes))})"
        params += sorted(rule.purposes)
        if rule.channels:
            cond += f" AND channel IN ({', '.join(['%s'] * len(rule.channels))})"
            params += sorted(rule.channels)
        parts.append(f"CASE WHEN {cond} THEN {1 << n} ELSE 0 END")
    return " + ".join(parts) or "0", params


def history_stream(
    *, rules: tuple[Rule, ...], since: datetime, until: datetime, recipient_ids: list[int]
) -> Iterator[tuple]:
    """(recipient_id, cleared at as epoch seconds, rule bitmask) of the recipients' cleared messages
    counting against a rule in [since, until], ordered by recipient then time: one query, read in chunks."""
    if not rules or not recipient_ids:
        return
    mask, mask_params = _mask_sql(rules)
    purposes = sorted({p for r in rules for p in r.purposes})
    table = Message._meta.db_table
    sql = (
        f"SELECT recipient_id, {_epoch_sql('accepted_at')}, {mask} FROM {table}"
        f" WHERE recipient_id IN ({', '.join(['%s'] * len(recipient_ids))})"
        f" AND accepted_at >= %s AND accepted_at <= %s"
        f" AND purpose IN ({', '.join(['%s'] * len(purposes))})"
        " ORDER BY recipient_id, accepted_at"
    )
    params = [*mask_params, *recipient_ids, since, until, *purposes]
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(20_000):
            yield from rows


def history_by_recipient(
    *, rules: tuple[Rule, ...], since: datetime, until: datetime, recipient_ids: list[int]
) -> Iterator[tuple[int, dict[int, list[float]]]]:
    """(recipient_id, {rule index: sorted cleared times}) for those of `recipient_ids` with cleared history
    counting against a rule in [since, until]. On PostgreSQL the grouping is done by the database (one
    row per recipient, one array per rule); elsewhere the ordered row stream is grouped here."""
    if not rules or not recipient_ids:
        return
    if connection.vendor != "postgresql":
        current, times = None, defaultdict(list)
        rows = history_stream(rules=rules, since=since, until=until, recipient_ids=recipient_ids)
        for rid, at, mask in rows:
            if rid != current:
                if current is not None:
                    yield current, times
                current, times = rid, defaultdict(list)
            n = 0
            while mask:
                if mask & 1:
                    times[n].append(float(at))
                mask >>= 1
                n += 1
        if current is not None:
            yield current, times
        return
    # One array of times per rule and recipient, each sorted by the database.
    columns, params = [], []
    for rule in rules:
        cond = f"purpose IN ({', '.join(['%s'] * len(rule.purposes))})"
        params += sorted(rule.purposes)
        if rule.channels:
            cond += f" AND channel IN ({', '.join(['%s'] * len(rule.channels))})"
            params += sorted(rule.channels)
        columns.append(
            f"array_agg(EXTRACT(EPOCH FROM accepted_at)::float8 ORDER BY accepted_at) FILTER (WHERE {cond})"
        )
    purposes = sorted({p for r in rules for p in r.purposes})
    sql = (
        f"SELECT recipient_id, {', '.join(columns)} FROM {Message._meta.db_table}"
        f" WHERE recipient_id = ANY(%s) AND accepted_at >= %s AND accepted_at <= %s"
        f" AND purpose IN ({', '.join(['%s'] * len(purposes))}) GROUP BY recipient_id"
    )
    with transaction.atomic(), connection.cursor() as setup:
        setup.execute("SET LOCAL work_mem = '256MB'")  # sort the period in memory, not on disk
        with connection.chunked_cursor() as cursor:
            cursor.execute(sql, [*params, list(recipient_ids), since, until, *purposes])
            while rows := cursor.fetchmany(5_000):
                for row in rows:
                    yield row[0], {n: times for n, times in enumerate(row[1:]) if times}


def _rule_match_sql(rule: Rule) -> tuple[str, list]:
    cond = f"purpose IN ({', '.join(['%s'] * len(rule.purposes))})"
    params = sorted(rule.purposes)
    if rule.channels:
        cond += f" AND channel IN ({', '.join(['%s'] * len(rule.channels))})"
        params += sorted(rule.channels)
    return cond, params


def caps_reached_counts(*, rules: tuple[Rule, ...], since: datetime, until: datetime) -> tuple[Counter, int]:
    """How many recipients reached each cap rule in [since, until] (`limit` cleared messages within one
    window, the last in the period), and how many reached any: window functions in the database, one
    pass per rule, no rows sent back."""
    if not rules:
        return Counter(), 0
    table = Message._meta.db_table
    parts, params = [], []
    for n, rule in enumerate(rules):
        cond, cond_params = _rule_match_sql(rule)
        gap = (
            "EXTRACT(EPOCH FROM accepted_at - prev)"
            if connection.vendor == "postgresql"
            else "(julianday(accepted_at) - julianday(prev)) * 86400.0"
        )
        if rule.limit == 1:  # one message reaches it: no window to slide
            parts.append(
                f"SELECT DISTINCT {n} AS rule, recipient_id FROM {table}"
                f" WHERE accepted_at >= %s AND accepted_at <= %s AND {cond}"
            )
            params += [since, until, *cond_params]
            continue
        parts.append(
            f"SELECT DISTINCT {n} AS rule, recipient_id FROM ("
            f"SELECT recipient_id, accepted_at, LAG(accepted_at, {rule.limit - 1}) OVER"
            f" (PARTITION BY recipient_id ORDER BY accepted_at) AS prev FROM {table}"
            f" WHERE accepted_at > %s AND accepted_at <= %s AND {cond}) AS w{n}"
            f" WHERE accepted_at >= %s AND prev IS NOT NULL AND {gap} < %s"
        )
        params += [since - rule.window, until, *cond_params, since, rule.window.total_seconds()]
    sql = (
        f"WITH reached AS ({' UNION ALL '.join(parts)})"
        " SELECT rule, COUNT(*) FROM reached GROUP BY rule"
        " UNION ALL SELECT -1, COUNT(*) FROM (SELECT recipient_id FROM reached GROUP BY recipient_id) AS a"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    counts = Counter({rules[n].name: count for n, count in rows if n >= 0})
    return counts, next((count for n, count in rows if n < 0), 0)


def _caps_reached(times_by_rule: dict[int, list[float]], rules: tuple[Rule, ...], since: float) -> list[int]:
    """The rules (by index) whose limit the recipient reached at some moment of the period: `limit`
    messages within one window, the last of them in the period (times sorted)."""
    reached = []
    for n, rule in enumerate(rules):
        times = times_by_rule.get(n)
        if not times or len(times) < rule.limit:
            continue
        k = rule.limit - 1
        j = max(bisect.bisect_left(times, since), k)
        if j < len(times) and min(map(operator.sub, times[j:], times[j - k :])) < rule.window.total_seconds():
            reached.append(n)
    return reached


# ---- one recipient's replay ---------------------------------------------------------------------------


@dataclass
class _Person:
    rid: int
    tz: ZoneInfo
    attributes: dict
    reachable: set[str]
    opted_out: set[tuple[str, str]]
    triggers: list[float]
    events: dict[str, list[float]]
    real: dict[int, list[float]] = field(default_factory=dict)
    sim: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))


class _Replay:
    def __init__(
        self, *, definition: dict, compiled: CompiledDefinition, policy: Policy, views: Mapping, f: Forecast
    ):
        self.definition, self.c, self.policy, self.f = definition, compiled, policy, f
        self.views = views  # the channel policies, from the same settings snapshot as `policy`
        self.until = _ts(f.until)
        self.rule_index = {r.id: n for n, r in enumerate(policy.rules)}
        reentry = definition.get("reentry") or {}
        self.reentry = reentry.get("policy", "after_exit")
        cooldown = reentry.get("cooldown")
        from .definition import duration_parse

        parsed = duration_parse(cooldown) if cooldown else None
        self.cooldown = parsed.total_seconds() if parsed else 0.0
        self.lint_ok: dict[tuple[str, str], bool] = {}
        self.shelf: dict[str, timedelta | None] = {}

    def _times(self, p: _Person, n: int, lo: float, hi: float) -> list[float]:
        """Cleared times (real and replayed) for rule n in (lo, hi], sorted."""
        out = []
        for source in (p.real.get(n, ()), p.sim.get(n, ())):
            a, b = bisect.bisect_right(source, lo), bisect.bisect_right(source, hi)
            out.extend(source[a:b])
        out.sort()
        return out

    def _shelf_life(self, channel: str) -> timedelta | None:
        """The channel's default shelf life, as the pipeline gives a send without its own expiry."""
        if channel not in self.shelf:
            view = self.views.get(channel)
            self.shelf[channel] = view.default_ttl if view is not None else None
        return self.shelf[channel]

    def _decide(
        self,
        p: _Person,
        *,
        channel: str,
        purpose: str,
        at: float,
        expires: float | None,
        shelf_life: timedelta | None = None,
    ):
        uses, windows = {}, {}
        for rule in self.policy.rules_for(channel, purpose):
            n = self.rule_index[rule.id]
            inside = self._times(p, n, at - rule.window.total_seconds(), at)
            windows[rule.id] = inside
            uses[rule.id] = RuleUse(len(inside), _dt(inside[0]) if inside else None)

        def kth_oldest(rule: Rule, k: int) -> datetime:
            return _dt(windows[rule.id][k - 1])

        return decide(
            self.policy,
            tz=p.tz,
            opted_out=(channel, purpose) in p.opted_out,
            channel=channel,
            purpose=purpose,
            expires_at=_dt(expires) if expires is not None else None,
            deliver_after=None,
            at=_dt(at),
            uses=uses,
            kth_oldest=kth_oldest,
            shelf_life=shelf_life,
        )

    def _clear(self, p: _Person, channel: str, purpose: str, at: float) -> None:
        for rule in self.policy.rules_for(channel, purpose):
            bisect.insort(p.sim[self.rule_index[rule.id]], at)

    def _channel(self, p: _Person, raw: dict, used: list[str]) -> str | None:
        channel = raw.get("channel")
        if channel != AUTO_CHANNEL:
            return channel if channel in p.reachable else None
        purpose = raw.get("purpose", "engagement")
        candidates = [c for c in AUTO_ORDER if c in p.reachable and self._lint_ok(c, purpose, raw)]
        fresh = [c for c in candidates if c not in used]
        return (fresh or candidates or [None])[0]

    def _lint_ok(self, channel: str, purpose: str, raw: dict) -> bool:
        key = (channel, raw.get("id", ""))
        if key not in self.lint_ok:
            self.lint_ok[key] = not any(
                v.severity == Severity.BLOCK
                for v in message_lint(
                    channel=channel,
                    purpose=purpose,
                    content=raw.get("content") or {},
                    policy=self.views.get(channel),
                )
            )
        return self.lint_ok[key]

    def _first_event(self, p: _Person, name: str, lo: float, hi: float) -> float | None:
        times = p.events.get(name) or []
        i = bisect.bisect_left(times, lo)
        return times[i] if i < len(times) and times[i] <= hi else None

    def person(self, p: _Person) -> None:
        last_end: float | None = None
        entered = False
        for t0 in p.triggers:
            if last_end is not None:
                if self.reentry == "never" or t0 < last_end:
                    continue
                if self.reentry == "cooldown" and t0 < last_end + self.cooldown:
                    continue
            entered = True
            self.f.entered += 1
            last_end = self.run(p, t0)
            if last_end is None:  # still running at the end of the window
                break
        if entered:
            self.f.recipients_entered += 1

    def run(self, p: _Person, t0: float) -> float | None:
        """One enrollment from t0; returns when it ended (None: still running when the window closes)."""
        c, f = self.c, self.f
        goal_at = None
        if c.goal_event:
            deadline = t0 + c.goal_within.total_seconds() if c.goal_within else self.until
            goal_at = self._first_event(p, c.goal_event, t0, min(deadline, self.until))
        t, step_id, used = t0, c.first, []
        for _ in range(MAX_STEPS):
            if goal_at is not None and goal_at <= t:
                f.converted += 1
                return goal_at
            if t > self.until:
                return None
            if not step_id:
                return t
            step = c.steps[step_id]
            raw = step.raw
            nxt = step.next_id
            if step.type == "send":
                purpose = raw.get("purpose", "engagement")
                channel = self._channel(p, raw, used)
                if channel is None:
                    f.unreachable[raw.get("channel")] += 1
                    if raw.get("on_suppressed") == "exit":
                        return t
                    step_id = nxt
                    continue
                f.sends[channel] += 1
                expires = t + step.expires_after.total_seconds() if step.expires_after else None
                shelf_life = self._shelf_life(channel) if expires is None else None
                decision = self._decide(
                    p, channel=channel, purpose=purpose, at=t, expires=expires, shelf_life=shelf_life
                )
                if decision.status == MessageStatus.DEFERRED:
                    f.deferred[decision.rule] += 1
                    f.deferred_by_channel[channel] += 1
                    # The message keeps the expiry it was recorded with when it is re-decided.
                    expires = _ts(decision.expires_at) if decision.expires_at else None
                    for _ in range(MAX_REDECIDE):
                        if decision.status != MessageStatus.DEFERRED:
                            break
                        t = _ts(decision.deliver_after)
                        if goal_at is not None and goal_at <= t:
                            f.converted += 1  # converted while it waited: the send is cancelled
                            return goal_at
                        if t > self.until:
                            f.still_deferred += 1
                            return None
                        decision = self._decide(p, channel=channel, purpose=purpose, at=t, expires=expires)
                if decision.status == MessageStatus.ACCEPTED:
                    f.cleared[channel] += 1
                    self._clear(p, channel, purpose, t)
                    used.append(channel)
                elif decision.status == MessageStatus.DEFERRED:
                    f.still_deferred += 1
                    return None
                else:
                    f.stopped_by_channel[channel] += 1
                    (f.suppressed if decision.status == MessageStatus.SUPPRESSED else f.expired)[
                        decision.rule
                    ] += 1
                    if raw.get("on_suppressed") == "exit":
                        return t
                step_id = nxt
            elif step.type == "wait":
                t += step.duration.total_seconds()
                step_id = nxt
            elif step.type == "wait_for_event":
                limit = t + step.timeout.total_seconds()
                seen = self._first_event(p, raw["event"], t, min(limit, self.until))
                if seen is not None:
                    t = seen
                else:
                    t = limit
                    if t <= self.until and raw.get("on_timeout") == "exit":
                        return t
                step_id = nxt
            elif step.type == "branch":
                cond = raw["if"]
                if cond == "converted":
                    hit = c.goal_event and self._first_event(p, c.goal_event, t0, t) is not None
                elif cond == "engaged":
                    hit = False
                else:
                    hit = p.attributes.get(cond.get("attribute")) == cond.get("equals")
                step_id = raw["then"] if hit else (raw.get("else") or nxt)
            else:  # exit
                return t
        return t


# ---- the forecast -------------------------------------------------------------------------------------


class _Background:
    """Run a read on its own thread and database connection when that sees the same data (PostgreSQL,
    autocommit); otherwise right away on this one (inside a transaction, e.g. a test, or on SQLite)."""

    def __init__(self, fn, **kwargs):
        self.fn, self.kwargs, self.value, self.error = fn, kwargs, None, None
        self.thread = None
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        else:
            self.value = fn(**kwargs)

    def _run(self) -> None:
        from django.db import connections

        try:
            self.value = self.fn(**self.kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised on the caller's thread
            self.error = exc
        finally:
            connections.close_all()

    def result(self):
        if self.thread is not None:
            self.thread.join()
            if self.error is not None:
                raise self.error
        return self.value


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def journey_forecast(*, definition: dict, now: datetime, days: int | None = None) -> Forecast:
    """Replay `definition` over the last `days` (settings: FORECAST_DAYS, 14) of real history."""
    started = time.perf_counter()
    days = days or int(getattr(settings, "ORCHESTRATOR", {}).get("FORECAST_DAYS", 14))
    since = now - timedelta(days=days)
    compiled = definition_compile(definition)
    f = Forecast(days=days, since=since, until=now, trigger=compiled.trigger_event)
    snapshot = snapshot_current()  # one read of the settings for the whole forecast
    policy = replace(policy_current(snapshot), pauses={})
    views = channel_policy_views(snapshot)
    rules = policy.rules
    f.rule_names = [r.name for r in rules]
    f.recipients_total = Recipient.objects.count()

    # Who enters: the trigger events of the period.
    triggers: dict[int, list[float]] = defaultdict(list)
    if compiled.trigger_event:
        for rid, at in (
            Event.objects.filter(name=compiled.trigger_event, occurred_at__gte=since, occurred_at__lte=now)
            .order_by("recipient_id", "occurred_at")
            .values_list("recipient_id", "occurred_at")
        ):
            triggers[rid].append(_ts(at))
    else:
        f.notes.append("No trigger event: enrollments would come from the API or the admin only.")
    names = {compiled.goal_event} | {
        s.raw["event"] for s in compiled.steps.values() if s.type == "wait_for_event"
    }
    names.discard("")
    people: dict[int, _Person] = {}
    ids = sorted(triggers)
    for chunk in _chunks(ids):
        for rid, tz, attributes in Recipient.objects.filter(pk__in=chunk).values_list(
            "pk", "timezone", "attributes"
        ):
            try:
                zone = ZoneInfo(tz or "UTC")
            except (KeyError, ValueError):
                zone = ZoneInfo("UTC")
            people[rid] = _Person(rid, zone, attributes or {}, set(), set(), triggers[rid], defaultdict(list))
        for rid, channel in ContactPoint.objects.filter(recipient_id__in=chunk, opted_in=True).values_list(
            "recipient_id", "channel"
        ):
            people[rid].reachable.add(channel)
        for rid, channel, purpose in Preference.objects.filter(
            recipient_id__in=chunk, opted_in=False
        ).values_list("recipient_id", "channel", "purpose"):
            people[rid].opted_out.add((channel, purpose))
        if names:
            for rid, name, at in (
                Event.objects.filter(
                    recipient_id__in=chunk, name__in=names, occurred_at__gte=since, occurred_at__lte=now
                )
                .order_by("occurred_at")
                .values_list("recipient_id", "name", "occurred_at")
            ):
                people[rid].events[name].append(_ts(at))

    replay = _Replay(definition=definition, compiled=compiled, policy=policy, views=views, f=f)
    since_ts = _ts(since)
    window_from = since - policy.max_window

    # Everyone: who reached each cap in the period, counted by the database (set-based). It does not
    # depend on the proposal, so on PostgreSQL outside a transaction the database counts on its own
    # connection while this process replays (two cores instead of one after the other).
    baseline = _Background(caps_reached_counts, rules=rules, since=since, until=now)

    # The entering recipients: their history streamed a recipient at a time, replayed, and their cap
    # counts moved from what they were to what they would have been.
    def tally(reached: list[int], sign: int) -> int:
        for n in reached:
            f.rule_after[rules[n].name] += sign
        return sign if reached else 0

    def flush(rid: int, times: dict[int, list[float]]) -> None:
        person = people.pop(rid)
        person.real = times
        f.at_cap_after += tally(_caps_reached(times, rules, since_ts), -1)
        replay.person(person)
        merged = {n: sorted([*times.get(n, ()), *person.sim.get(n, ())]) for n in range(len(rules))}
        f.at_cap_after += tally(_caps_reached(merged, rules, since_ts), +1)

    count = 0
    for chunk in _chunks(sorted(people)):
        history = history_by_recipient(rules=rules, since=window_from, until=now, recipient_ids=chunk)
        for rid, times in history:
            count += 1
            flush(rid, times)
    for rid in sorted(people):  # entering recipients without any cleared history
        flush(rid, {})
    counts, reached_any = baseline.result()
    f.at_cap_before, f.at_cap_after = reached_any, reached_any + f.at_cap_after
    for name, n in counts.items():
        f.rule_before[name] = n
        f.rule_after[name] += n
    f.recipients_read = count
    f.seconds = time.perf_counter() - started
    return f
