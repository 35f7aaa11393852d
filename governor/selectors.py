"""Reads for the governor: the overview page (volume, outcomes, rules, the queue, who spends caps)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q

from orchestrator.models import CLEARED_STATUSES, Channel, Message, MessageStatus, Source

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
            (f"{Source(r['source']).label}: {r['source_ref'] or '—'}", r["n"])
            for r in spending.order_by()
            .values("source", "source_ref")
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
        "rules": list(CapRule.objects.order_by("-enabled", "name")),
        "quiet_hours": list(QuietHours.objects.order_by("-enabled", "name")),
        "pauses": list(ChannelPause.objects.filter(resumed_at__isnull=True)),
    }
