"""Reads for the governor: the overview page (volume, outcomes, rules, the queue, who spends caps)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, DateTimeField, ExpressionWrapper, F, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

from orchestrator.models import CLEARED_STATUSES, Channel, Message, MessageDecision, MessageStatus, Source

from .models import CapRule, ChannelPause, QuietHours


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    percent: float  # of the largest bar in its chart, for the CSS width
    extra: str = ""


def _bars(pairs: list[tuple[str, int]], extra: dict[str, str] | None = None) -> list[Bar]:
    top = max((v for _, v in pairs), default=0) or 1
    return [
        Bar(label, value, round(100 * value / top, 1), (extra or {}).get(label, "")) for label, value in pairs
    ]


def governor_overview(*, now: datetime) -> dict:
    """Everything the governor page shows, for the UTC day of `now` (a handful of grouped queries)."""
    since = now.replace(hour=0, minute=0, second=0, microsecond=0)
    cleared_today = Message.objects.filter(accepted_at__gte=since, accepted_at__lte=now)
    decided_today = Message.objects.filter(decided_at__gte=since, decided_at__lte=now)

    by_channel = dict(cleared_today.order_by().values_list("channel").annotate(n=Count("id")))
    volume = _bars([(Channel(c).label, by_channel.get(c, 0)) for c in Channel.values])

    outcome_rows = dict(decided_today.order_by().values_list("status").annotate(n=Count("id")))
    outcomes_pairs = [
        ("cleared", sum(n for s, n in outcome_rows.items() if s in CLEARED_STATUSES)),
        ("deferred", outcome_rows.get(MessageStatus.DEFERRED, 0)),
        ("suppressed", outcome_rows.get(MessageStatus.SUPPRESSED, 0)),
        ("expired", outcome_rows.get(MessageStatus.EXPIRED, 0)),
    ]
    outcomes = _bars(outcomes_pairs)

    rule_rows = (
        decided_today.exclude(rule="")
        .order_by()
        .values("rule")
        .annotate(
            n=Count("id"),
            deferred=Count("id", filter=Q(deferred_at__isnull=False)),
            suppressed=Count("id", filter=Q(status=MessageStatus.SUPPRESSED)),
            expired=Count("id", filter=Q(status=MessageStatus.EXPIRED)),
        )
        .order_by("-n")[:12]
    )
    by_rule = _bars(
        [(r["rule"], r["n"]) for r in rule_rows],
        {
            r["rule"]: f"{r['deferred']} deferred, {r['suppressed']} suppressed, {r['expired']} expired"
            for r in rule_rows
        },
    )

    deferred = Message.objects.filter(status=MessageStatus.DEFERRED)
    queue = deferred.aggregate(
        total=Count("id"),
        due=Count("id", filter=Q(deliver_after__lte=now)),
        held=Count("id", filter=Q(deliver_after__isnull=True)),
        next_hour=Count("id", filter=Q(deliver_after__gt=now, deliver_after__lte=now + timedelta(hours=1))),
    )
    queue_by_rule = _bars(
        [
            (r["rule"] or "requested time", r["n"])
            for r in deferred.order_by().values("rule").annotate(n=Count("id")).order_by("-n")[:8]
        ]
    )
    next_up = list(
        deferred.select_related("recipient")
        .filter(deliver_after__isnull=False)
        .order_by("deliver_after", "-priority", "created_at")[:15]
    )

    # Who spends recipients' caps: cleared messages today of the purposes the enabled rules count.
    capped_purposes = sorted(
        {
            p
            for purposes in CapRule.objects.filter(enabled=True).values_list("purposes", flat=True)
            for p in purposes
        }
    )
    spending = cleared_today.filter(purpose__in=capped_purposes)
    by_source = dict(spending.order_by().values_list("source").annotate(n=Count("id")))
    sources = _bars([(Source(s).label, by_source.get(s, 0)) for s in Source.values])
    top_refs = _bars(
        [
            (f"{Source(r['source']).label}: {r['source_ref'] or r['source_system'] or '—'}", r["n"])
            for r in spending.order_by()
            .values("source", "source_ref", "source_system")
            .annotate(n=Count("id"))
            .order_by("-n")[:10]
        ]
    )
    return {
        "since": since,
        "now": now,
        "volume": volume,
        "volume_total": sum(by_channel.values()),
        "outcomes": outcomes,
        "decided_total": sum(outcome_rows.values()),
        "by_rule": by_rule,
        "queue": queue,
        "queue_by_rule": queue_by_rule,
        "next_up": next_up,
        "capped_purposes": capped_purposes,
        "sources": sources,
        "top_refs": top_refs,
        "around": around_us(now=now, since=since, spent=sum(by_source.values())),
        "rules": list(CapRule.objects.order_by("-enabled", "name")),
        "quiet_hours": list(QuietHours.objects.order_by("-enabled", "name")),
        "pauses": list(ChannelPause.objects.filter(resumed_at__isnull=True)),
    }


# --- what went around us: sends recorded from other systems (orchestrator.recording) ---------------------


@dataclass(frozen=True)
class CapSpent:
    """One rule's caps, right now, as one other system spent them."""

    rule: str
    limit: int
    recipients: int  # recipients with at least one of its sends counted by the rule now
    share: float  # of those recipients' cap, on average, spent by this system (0-100)
    full: int  # recipients whose cap this system filled on its own


@dataclass(frozen=True)
class AroundUs:
    """One other system's sends: today's volume, its share of the day's cap-counted sends, the ones that
    broke a channel's job (lint), the orchestrated messages they pushed back, and the caps spent now."""

    system: str
    recorded: int
    share: float  # of today's cleared messages the caps count (0-100)
    broke: int
    codes: list[tuple[str, int]]
    deferred: int
    caps: list[CapSpent]


def _external_codes(*, since: datetime, now: datetime) -> dict[str, list[tuple[str, int]]]:
    """The lint codes of today's recorded sends, per system, most frequent first (one grouped query)."""
    table = Message._meta.db_table
    if connection.vendor == "postgresql":
        each, code = "jsonb_array_elements(m.warnings) w", "w->>'code'"
    else:
        each, code = "json_each(m.warnings) w", "json_extract(w.value, '$.code')"
    sql = (
        f"SELECT m.source_system, {code}, COUNT(*) FROM {table} m, {each}"
        " WHERE m.source = %s AND m.accepted_at >= %s AND m.accepted_at <= %s GROUP BY 1, 2 ORDER BY 3 DESC"
    )
    found: dict[str, list[tuple[str, int]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [Source.EXTERNAL, since, now])
        for system, c, n in cursor.fetchall():
            found.setdefault(system, []).append((c, n))
    return found


def _counted_by(rule: CapRule):
    """Recorded sends a cap rule counts (its purposes, on its channels)."""
    qs = Message.objects.filter(source=Source.EXTERNAL, purpose__in=rule.purposes)
    return qs.filter(channel__in=rule.channels) if rule.channels else qs


def _caps_spent(rule: CapRule, *, now: datetime) -> dict[str, CapSpent]:
    """Per system: how much of each recipient's cap under `rule` its sends fill right now."""
    per = (
        _counted_by(rule)
        .filter(accepted_at__gt=now - rule.window, accepted_at__lte=now)
        .order_by()
        .values_list("source_system", "recipient_id")
        .annotate(n=Count("id"))
    )
    totals: dict[str, list[int]] = {}
    for system, _, n in per.iterator(chunk_size=5000):
        row = totals.setdefault(system, [0, 0, 0])
        row[0] += 1
        row[1] += min(n, rule.limit)
        row[2] += n >= rule.limit
    return {
        system: CapSpent(rule.name, rule.limit, people, round(100 * spent / (rule.limit * people), 1), full)
        for system, (people, spent, full) in totals.items()
    }


def _deferred_by(rule: CapRule, systems: list[str], *, since: datetime, now: datetime) -> dict[str, int]:
    """Orchestrated messages `rule` deferred today that it would have let through without the recorded
    sends it counted — per system that had a send among them. A send counts when it was recorded before
    the decision and fell inside the rule's window at that time."""
    window_start = ExpressionWrapper(OuterRef("at") - OuterRef("window"), output_field=DateTimeField())

    def counted(system: str | None):
        qs = _counted_by(rule).filter(
            recipient_id=OuterRef("message__recipient_id"),
            accepted_at__gt=window_start,
            recorded_at__lte=OuterRef("at"),
        )
        if system is not None:
            qs = qs.filter(source_system=system)
        n = qs.order_by().values("recipient_id").annotate(n=Count("id")).values("n")
        return Coalesce(Subquery(n, output_field=IntegerField()), 0)

    names = {f"s{k}": system for k, system in enumerate(systems)}
    decisions = (
        MessageDecision.objects.filter(
            outcome=MessageStatus.DEFERRED, rule=rule.name, at__gte=since, at__lte=now, used__isnull=False
        )
        .exclude(message__source=Source.EXTERNAL)
        .annotate(external=counted(None), **{k: counted(s) for k, s in names.items()})
        .filter(external__gt=0, used__lt=F("limit") + F("external"))
    )
    seen: dict[str, set[int]] = {system: set() for system in systems}
    for message_id, *counts in decisions.values_list("message_id", *names).iterator(chunk_size=5000):
        for system, n in zip(systems, counts, strict=True):
            if n:
                seen[system].add(message_id)
    return {system: len(ids) for system, ids in seen.items()}


def around_us(*, now: datetime, since: datetime, spent: int) -> list[AroundUs]:
    """ "What went around us": per other system, today's recorded sends (by sent time), their share of the
    `spent` cap-counted sends, which of them broke a channel's job, the orchestrated messages they had
    deferred, and the share of recipients' caps they fill now, per enabled rule."""
    today = Message.objects.filter(source=Source.EXTERNAL, accepted_at__gte=since, accepted_at__lte=now)
    rules = list(CapRule.objects.filter(enabled=True).order_by("name"))
    capped = {p for r in rules for p in r.purposes}
    rows = (
        today.order_by()
        .values("source_system")
        .annotate(
            n=Count("id"),
            capped=Count("id", filter=Q(purpose__in=capped)),
            broke=Count("id", filter=~Q(warnings=[])),
        )
        .order_by("-n")
    )
    volume = {r["source_system"]: r for r in rows}
    caps = {rule.name: _caps_spent(rule, now=now) for rule in rules}
    systems = sorted(set(volume) | {s for spent_now in caps.values() for s in spent_now})
    if not systems:
        return []
    codes = _external_codes(since=since, now=now)
    deferred: dict[str, int] = dict.fromkeys(systems, 0)
    for rule in rules:
        for system, n in _deferred_by(rule, systems, since=since, now=now).items():
            deferred[system] += n
    out = []
    for system in systems:
        v = volume.get(system, {"n": 0, "capped": 0, "broke": 0})
        out.append(
            AroundUs(
                system=system,
                recorded=v["n"],
                share=round(100 * v["capped"] / spent, 1) if spent else 0.0,
                broke=v["broke"],
                codes=codes.get(system, [])[:4],
                deferred=deferred[system],
                caps=[caps[r.name][system] for r in rules if system in caps[r.name]],
            )
        )
    return sorted(out, key=lambda a: (-a.recorded, a.system))
