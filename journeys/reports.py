"""The measurement reports: filters read from a query string, the journey report, the overall report and
the attribution report (the API's and the admin's numbers are these), and their tables as CSV rows.

The numbers come from `journeys.measurement` (set-based SQL); this module only validates input, shapes
the results and says in words what they mean.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils.dateparse import parse_date, parse_datetime

from governor.models import GlobalHoldout
from orchestrator.authority import model_perm_has, user_channels
from orchestrator.limits import duration_iso  # noqa: F401 - re-exported for the admin
from orchestrator.models import Channel

from . import measurement
from .definition import definition_compile, duration_format, duration_parse
from .measurement import MODEL_LABELS, MODELS, REACHED_CHOICES, CreditRow, Scope
from .models import ConversionDefinition, Enrollment, EnrollmentStatus, Journey, Waiting

MAX_HALF_LIFE = timedelta(days=3650)
TOP_SEQUENCES = 20


def _reports_setting(name: str, default: Any) -> Any:
    return (getattr(settings, "ORCHESTRATOR", {}).get("REPORTS") or {}).get(name, default)


def default_half_life() -> timedelta:
    return _reports_setting("HALF_LIFE", timedelta(days=7))


def default_reached() -> tuple[str, ...]:
    return tuple(_reports_setting("REACHED", measurement.DEFAULT_REACHED))


# --- who may read reports ---------------------------------------------------------------------------


def reports_viewable(*, user: Any) -> bool:
    """Staff holding the report permission (the messaging team; channel owners for their own journeys,
    through `reports_visible_journeys`)."""
    return bool(user and user.is_active and user.is_staff) and model_perm_has(
        user, "journeys.view_report_journey"
    )


def reports_overall_viewable(*, user: Any) -> bool:
    """The overall report spans every channel: the messaging team's (not a channel owner's)."""
    return reports_viewable(user=user) and user_channels(user) is None


def reports_visible_journeys(*, user: Any):
    """The journeys whose reports this user may open: a channel owner's own channels only."""
    from .selectors import journeys_visible

    return journeys_visible(user=user)


# --- input ------------------------------------------------------------------------------------------


class ReportInputError(Exception):
    """Bad report parameters: `errors` maps each field to its messages (the API's 400)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


class ReportJourneyNotFound(Exception):
    """The `journey` parameter names no journey (the API's 404)."""


@dataclass(frozen=True)
class ReportFilters:
    start: datetime | None = None
    end: datetime | None = None  # exclusive
    half_life: timedelta = field(default_factory=default_half_life)
    reached: tuple[str, ...] = field(default_factory=default_reached)
    channel: str = ""
    models: tuple[str, ...] = MODELS
    journey: Journey | None = None
    conversion: ConversionDefinition | None = None

    @property
    def scope(self) -> Scope:
        return Scope(start=self.start, end=self.end, half_life=self.half_life, reached=self.reached)

    def echo(self) -> dict[str, Any]:
        """The filters as the API states them back."""
        return {
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "journey": self.journey.slug if self.journey else None,
            "channel": self.channel or None,
            "conversion": self.conversion.name if self.conversion else None,
            "half_life": duration_iso(self.half_life),
            "reached": list(self.reached),
            "models": list(self.models),
        }


def _clean_text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def _moment(value: str, *, end: bool) -> datetime:
    """A date (a whole day: `to` includes it) or an ISO 8601 date-time (UTC when no offset is given)."""
    if "\x00" in value or len(value) > 64:
        raise ValueError
    day = parse_date(value)
    if day is not None:
        at = datetime.combine(day, time.min, tzinfo=UTC)
        if end:
            try:
                at += timedelta(days=1)
            except OverflowError:
                at = datetime.max.replace(tzinfo=UTC)
        return at
    at = parse_datetime(value)
    if at is None:
        raise ValueError
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def half_life_parse(value: str) -> timedelta:
    """ISO 8601 (`P7D`, `PT12H`), `HH:MM:SS`, or a number of days; ValueError when not a positive,
    sane duration."""
    try:
        days = float(value)
    except ValueError:
        parsed = duration_parse(value)
    else:
        if days != days or days in (float("inf"), float("-inf")):
            raise ValueError("not a number")
        try:
            parsed = timedelta(days=days)
        except OverflowError as exc:
            raise ValueError("too long") from exc
    if parsed is None:
        raise ValueError("not a duration")
    return parsed


def report_filters_parse(
    params: Mapping[str, Any],
    *,
    journey: Journey | None = None,
    default_days: int | None = None,
    now: datetime | None = None,
) -> ReportFilters:
    """Read `from`, `to`, `half_life`, `reached`, `channel`, `model`, `conversion` and (unless given)
    `journey`. Raises ReportInputError naming each bad field, ReportJourneyNotFound for an unknown
    journey. `default_days`: a range ending today when neither bound is given (the admin's default)."""
    errors: dict[str, list[str]] = {}
    raw = {key: _clean_text(params.get(key)) for key in params}
    if hasattr(params, "getlist"):  # a form's checkboxes repeat the key: reached=sent&reached=opened
        for key in ("reached", "model"):
            if key in params:
                raw[key] = ",".join(_clean_text(v) for v in params.getlist(key))
    for key in [k for k, v in raw.items() if "\x00" in v]:
        errors[key] = ["Contains a NUL character."]
        raw.pop(key)

    start = end = None
    for key in ("from", "to"):
        if not raw.get(key):
            continue
        try:
            moment = _moment(raw[key], end=key == "to")
        except (ValueError, OverflowError):
            errors.setdefault(key, []).append(
                f"{raw[key][:40]!r} is not a date (YYYY-MM-DD) or an ISO 8601 date-time."
            )
            continue
        if key == "from":
            start = moment
        else:
            end = moment
    if start is not None and end is not None and "to" not in errors:
        if end < start:
            errors.setdefault("to", []).append("The range is reversed: `to` is before `from`.")
        elif end == start:
            errors.setdefault("to", []).append("The range is empty: `to` is the same moment as `from`.")
    if default_days and not raw.get("from") and not raw.get("to") and now is not None:
        end = datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC) + timedelta(days=1)
        start = end - timedelta(days=default_days)

    half_life = default_half_life()
    if raw.get("half_life"):
        try:
            half_life = half_life_parse(raw["half_life"])
        except (ValueError, OverflowError):
            errors.setdefault("half_life", []).append(
                "A duration such as P7D or PT12H (or a number of days) is expected."
            )
        else:
            if half_life <= timedelta(0):
                errors.setdefault("half_life", []).append("The half-life must be longer than zero.")
            elif half_life > MAX_HALF_LIFE:
                errors.setdefault("half_life", []).append("The half-life is at most 3650 days.")

    reached = default_reached()
    if "reached" in raw:
        wanted = tuple(dict.fromkeys(s.strip() for s in raw["reached"].split(",") if s.strip()))
        unknown = [s for s in wanted if s not in REACHED_CHOICES]
        if not wanted or unknown:
            errors.setdefault("reached", []).append(
                f"Statuses that count as reaching the recipient, among {', '.join(REACHED_CHOICES)}"
                + (f" (not {', '.join(repr(u[:20]) for u in unknown[:3])})." if unknown else ".")
            )
        else:
            reached = wanted

    channel = raw.get("channel", "")
    if channel and channel not in Channel.values:
        errors.setdefault("channel", []).append(
            f"Unknown channel; expected one of {', '.join(Channel.values)}."
        )

    models = MODELS
    if raw.get("model"):
        wanted = tuple(dict.fromkeys(s.strip() for s in raw["model"].split(",") if s.strip()))
        unknown = [s for s in wanted if s not in MODELS]
        if unknown or not wanted:
            errors.setdefault("model", []).append(
                f"Unknown model {', '.join(repr(u[:30]) for u in unknown[:3])}; expected {', '.join(MODELS)}."
            )
        else:
            models = tuple(m for m in MODELS if m in wanted)

    conversion = None
    if raw.get("conversion"):
        conversion = ConversionDefinition.objects.filter(name=raw["conversion"][:200]).first()
        if conversion is None and raw["conversion"].isdigit() and len(raw["conversion"]) < 18:
            conversion = ConversionDefinition.objects.filter(pk=int(raw["conversion"])).first()
        if conversion is None:
            errors.setdefault("conversion", []).append("No conversion definition by that name.")

    if journey is None and raw.get("journey"):
        journey = Journey.objects.select_related("live_version").filter(slug=raw["journey"][:100]).first()
        if journey is None and not errors:
            raise ReportJourneyNotFound(f"No journey {raw['journey'][:100]!r}.")

    if errors:
        raise ReportInputError(errors)
    return ReportFilters(
        start=start,
        end=end,
        half_life=half_life,
        reached=reached,
        channel=channel,
        models=models,
        journey=journey,
        conversion=conversion,
    )


# --- attribution ------------------------------------------------------------------------------------

JOURNEY_COMPUTED_OVER = (
    "The journey's goal conversions of the entrants in the range; a touch is one of the journey's own sends "
    "that reached the recipient (statuses: {reached}) between entry and the conversion."
)
OVERALL_COMPUTED_OVER = (
    "Events matching the conversion definitions in the range; a touch is any message that reached the "
    "recipient (statuses: {reached}) within the definition's lookback window before the event."
)
MODELS_EXPLAINED = (
    "Each conversion's credit (1, and its value) is split across its touches: first touch, last touch, "
    "linear (equal shares), time decay (halved every {half_life} before the conversion) and position-based "
    "(40 % first, 40 % last, 20 % shared by the middle). Touches at the same instant share a position. "
    "Conversions with no touch are counted but not attributed."
)


def _nonzero(values: Mapping[str, float], digits: int) -> dict[str, float]:
    return {k: round(v, digits) for k, v in sorted(values.items()) if abs(v) > 1e-9}


def _credit_row(row: CreditRow, models: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if row.dimension in ("journey", "step"):
        out["journey"] = row.journey or None
        out["source"] = row.source or None
    if row.dimension == "step":
        out["step"] = row.step or None
    if row.dimension in ("channel", "step"):
        out["channel"] = row.channel
    out["touches"] = row.touches
    for m in models:
        out[m] = round(row.credit[m], 4)
    for m in models:
        out[f"{m}_value"] = round(row.value[m], 2)
    return out


@dataclass
class Attribution:
    block: dict[str, Any]
    by_channel: list[dict[str, Any]]
    by_journey: list[dict[str, Any]]
    by_step: list[dict[str, Any]]
    insights: list[str]
    totals: dict[str, Any]


def attribution_compute(*, conversions: measurement.Conversions, filters: ReportFilters, computed_over: str):
    """Credit under the chosen models per channel, journey and step, with the block the API returns."""
    rows = measurement.credit_compute(conversions=conversions, scope=filters.scope)
    totals = measurement.conversions_totals(conversions=conversions)
    total = next((r for r in rows if r.dimension == "total"), None)
    attributed = round(total.credit["linear"]) if total else 0
    attributed_value = total.value["linear"] if total else 0.0
    channel_rows = sorted((r for r in rows if r.dimension == "channel"), key=lambda r: r.channel)
    block: dict[str, Any] = {
        "computed_over": computed_over.format(reached=", ".join(filters.reached))
        + " "
        + MODELS_EXPLAINED.format(half_life=duration_format(filters.half_life)),
        "conversions": totals["conversions"],
        "attributed": attributed,
        "unattributed": totals["conversions"] - attributed,
        "value": round(totals["value"], 2),
        "attributed_value": round(attributed_value, 2),
        "half_life": duration_iso(filters.half_life),
    }
    for m in filters.models:
        block[m] = _nonzero({r.channel: r.credit[m] for r in channel_rows}, 4)
    block["value_credit"] = {
        m: _nonzero({r.channel: r.value[m] for r in channel_rows}, 2) for m in filters.models
    }

    def keep(row: CreditRow) -> bool:
        return not filters.channel or row.channel == filters.channel

    by_channel = [_credit_row(r, filters.models) for r in channel_rows if keep(r)]
    by_journey = [
        _credit_row(r, filters.models)
        for r in sorted(
            (r for r in rows if r.dimension == "journey"),
            key=lambda r: (r.journey == "", r.journey, r.source),
        )
    ]
    by_step = [
        _credit_row(r, filters.models)
        for r in sorted(
            (r for r in rows if r.dimension == "step" and keep(r)),
            key=lambda r: (r.journey == "", r.journey, r.source, r.step, r.channel),
        )
    ]
    insights = last_touch_insights(block=block, models=filters.models, channel=filters.channel)
    return Attribution(block, by_channel, by_journey, by_step, insights, totals)


def last_touch_insights(*, block: Mapping[str, Any], models: tuple[str, ...], channel: str = "") -> list[str]:
    """What last touch under- or over-credits, in words: each channel's share under last touch beside
    linear (and the other models), largest gap first."""
    attributed = block.get("attributed") or 0
    if not attributed:
        return ["No conversion had a touch in this range: there is no credit to compare."]
    if "last" not in models:
        return []
    channels = sorted({c for m in models for c in block.get(m, {})})
    lines = []
    for ch in channels:
        if channel and ch != channel:
            continue
        shares = {m: block.get(m, {}).get(ch, 0.0) / attributed for m in models}
        reference = "linear" if "linear" in models else next((m for m in models if m != "last"), None)
        if reference is None:
            continue
        last, ref = shares["last"], shares[reference]
        others = ", ".join(
            f"{MODEL_LABELS[m].split(' (')[0].lower()} {_share(shares[m])}"
            for m in models
            if m not in ("last", reference)
        )
        gap = last - ref
        if abs(gap) < 0.05:
            verdict = f"last touch and {reference.replace('_', ' ')} agree on {ch}"
        elif gap < 0:
            verdict = f"last touch under-credits {ch} by {abs(gap) * 100:.0f} points"
        else:
            verdict = f"last touch over-credits {ch} by {gap * 100:.0f} points"
        sentence = (
            f"Last touch gives {ch} {_share(last)} of the credit; {reference.replace('_', ' ')} gives it "
            f"{_share(ref)}" + (f" ({others})" if others else "") + f": {verdict}."
        )
        lines.append((abs(gap), sentence))
    return [s for _, s in sorted(lines, key=lambda x: -x[0])]


def _share(x: float) -> str:
    return f"{x * 100:.0f} %"


def attribution_report(*, filters: ReportFilters) -> dict[str, Any]:
    """`GET reports/attribution/`: credit per channel (and journey, step) under the five models, for a
    journey's goal conversions or, without a journey, for the conversion definitions."""
    if filters.journey is not None:
        conversions = measurement.journey_conversions(journey_ids=[filters.journey.pk], scope=filters.scope)
        computed_over = JOURNEY_COMPUTED_OVER
    else:
        conversions = measurement.definition_conversions(
            definitions=_definitions(filters), scope=filters.scope
        )
        computed_over = OVERALL_COMPUTED_OVER
    a = attribution_compute(conversions=conversions, filters=filters, computed_over=computed_over)
    return {
        **filters.echo(),
        **a.block,
        "by_channel": a.by_channel,
        "by_journey": a.by_journey,
        "by_step": a.by_step,
        "insights": a.insights,
    }


def _definitions(filters: ReportFilters) -> list[ConversionDefinition]:
    if filters.conversion is not None:
        return [filters.conversion]
    return list(ConversionDefinition.objects.filter(enabled=True).order_by("pk"))


# --- the journey report -----------------------------------------------------------------------------


def _cohort(journey_ids: list[int] | None, filters: ReportFilters):
    qs = Enrollment.objects.all()
    if journey_ids is not None:
        qs = qs.filter(journey_id__in=journey_ids)
    if filters.start is not None:
        qs = qs.filter(entered_at__gte=filters.start)
    if filters.end is not None:
        qs = qs.filter(entered_at__lt=filters.end)
    return qs


def journey_holdout_share(journey: Journey) -> Decimal:
    version = journey.live_version
    return definition_compile(version.definition).holdout_share if version is not None else Decimal(0)


def holdout_block(*, share: Decimal, groups: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    (n1, x1), (n2, x2) = groups["exposed"], groups["held_out"]
    return {
        "share": float(share),
        "exposed": n1,
        "held_out": n2,
        "exposed_converted": x1,
        "held_out_converted": x2,
        **measurement.lift_estimate(exposed=n1, exposed_converted=x1, held_out=n2, held_out_converted=x2),
    }


def _trend(*, entered: Mapping[str, int], totals: Mapping[str, Any], filters: ReportFilters) -> list[dict]:
    days = sorted(set(entered) | set(totals["by_day"]))
    if filters.start and filters.end and (filters.end - filters.start) <= timedelta(days=400) and days:
        # Every day of the range, so the chart's gaps are zeros rather than missing points.
        day = filters.start.date()
        last = (filters.end - timedelta(microseconds=1)).date()
        days = []
        while day <= last:
            days.append(day.isoformat())
            day += timedelta(days=1)
    return [
        {
            "day": day,
            "entered": entered.get(day, 0),
            "conversions": totals["by_day"].get(day, [0, 0.0])[0],
            "value": round(totals["by_day"].get(day, [0, 0.0])[1], 2),
        }
        for day in days
    ]


def _entered_by_day(cohort) -> dict[str, int]:
    return {
        day.isoformat(): n
        for day, n in cohort.annotate(day=TruncDate("entered_at", tzinfo=UTC))
        .values_list("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
        if day is not None
    }


def _legacy_sequences(sequences: list[dict]) -> list[dict[str, Any]]:
    """The report's original `touch_sequences`: converted entrants by the channels that reached them."""
    counts: dict[str, int] = defaultdict(int)
    for row in sequences:
        if row["converted"] and row["sequence"] != "(held out)":
            counts[row["sequence"]] += row["converted"]
    return [
        {"sequence": s, "converted": n} for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _sequence_rows(rows: list[dict], channel: str) -> list[dict]:
    out = []
    for row in rows:
        if channel and channel not in row["sequence"].split(" → "):
            continue
        median = row["median_seconds"]
        out.append(
            {
                **row,
                "median_time_to_convert": duration_iso(timedelta(seconds=round(median)))
                if median is not None
                else None,
                "median_text": duration_format(timedelta(seconds=round(median)))
                if median is not None
                else "—",
            }
        )
    return out


def journey_report(*, journey: Journey, filters: ReportFilters) -> dict[str, Any]:
    """`GET journeys/{slug}/report/` and the admin's journey report: the entry cohort of the range."""
    cohort = _cohort([journey.pk], filters)
    counts = {"active": 0, "waiting": 0, "converted": 0, "exited": 0}
    for status, waiting, n in cohort.values_list("status", "waiting").annotate(n=Count("id")):
        if status == EnrollmentStatus.ACTIVE:
            counts["waiting" if waiting != Waiting.NOTHING else "active"] += n
        else:
            counts[status] += n
    enrolled = sum(counts.values())
    conversions = measurement.journey_conversions(journey_ids=[journey.pk], scope=filters.scope)
    a = attribution_compute(conversions=conversions, filters=filters, computed_over=JOURNEY_COMPUTED_OVER)
    sequences = measurement.sequences_compute(journey_ids=[journey.pk], scope=filters.scope, with_steps=True)
    groups = {"exposed": (0, 0), "held_out": (0, 0)}
    for held, n, converted in cohort.values_list("held_out").annotate(
        n=Count("id"), c=Count("id", filter=Q(status=EnrollmentStatus.CONVERTED))
    ):
        groups["held_out" if held else "exposed"] = (n, converted)
    block = dict(a.block)
    if "first" in filters.models:
        block["first_touch"] = block["first"]  # the report's original field names
    if "last" in filters.models:
        block["last_touch"] = block["last"]
    return {
        **filters.echo(),
        "journey": journey.slug,
        "name": journey.name,
        "enrolled": enrolled,
        **counts,
        "conversion_rate": round(counts["converted"] / enrolled, 4) if enrolled else 0.0,
        "value": block["value"],
        "touch_sequences": _legacy_sequences(sequences),
        "sequences": _sequence_rows(sequences, filters.channel)[:TOP_SEQUENCES],
        "funnel": journey_funnel(
            journey=journey, filters=filters, enrolled=enrolled, converted=counts["converted"]
        ),
        "attribution": block,
        "by_channel": a.by_channel,
        "by_step": a.by_step,
        "insights": a.insights,
        "holdout": holdout_block(share=journey_holdout_share(journey), groups=groups),
        "trend": _trend(entered=_entered_by_day(cohort), totals=a.totals, filters=filters),
    }


def journey_funnel(*, journey: Journey, filters: ReportFilters, enrolled: int, converted: int) -> list[dict]:
    """Entered → each step (in the live version's order; steps of older versions after) → converted."""
    by_step = measurement.funnel_compute(journey_ids=[journey.pk], scope=filters.scope)
    version = journey.live_version or journey.versions.order_by("-number").first()
    order = [s for s in (version.steps if version else [])]
    rows = [{"step": "(entered)", "type": "", "channel": "", "entered": enrolled}]
    seen = set()
    for step in order:
        sid = step.get("id")
        seen.add(sid)
        stats = by_step.get(sid, {})
        channel = step.get("channel", "") if step.get("type") == "send" else ""
        if filters.channel and step.get("type") == "send" and channel not in (filters.channel, "auto"):
            continue
        rows.append(_funnel_row(sid, step.get("type", ""), channel, stats))
    for sid, stats in sorted(by_step.items()):
        if sid not in seen:
            rows.append(_funnel_row(sid, stats["type"], "", stats))
    rows.append({"step": "(converted)", "type": "", "channel": "", "entered": converted})
    return rows


def _funnel_row(step: str, kind: str, channel: str, stats: Mapping[str, int]) -> dict[str, Any]:
    return {
        "step": step,
        "type": kind,
        "channel": channel,
        "entered": stats.get("entered", 0),
        "sent": stats.get("sent", 0),
        "reached": stats.get("reached", 0),
        "engaged": stats.get("engaged", 0),
        "held_out": stats.get("held_out", 0),
        "converted": stats.get("converted", 0),
    }


# --- the overall report -----------------------------------------------------------------------------


def overall_report(*, filters: ReportFilters) -> dict[str, Any]:
    """The admin's report without a journey: conversion definitions attributed to every message, the
    journeys side by side, the sequences across journeys, and the global holdout."""
    definitions = _definitions(filters)
    conversions = measurement.definition_conversions(definitions=definitions, scope=filters.scope)
    a = attribution_compute(conversions=conversions, filters=filters, computed_over=OVERALL_COMPUTED_OVER)
    sequences = measurement.sequences_compute(journey_ids=None, scope=filters.scope, with_steps=False)
    cohort = _cohort(None, filters)
    journeys = [
        {
            "journey": slug,
            "name": name,
            "entered": n,
            "held_out": held,
            "converted": conv,
            "conversion_rate": round(conv / n, 4) if n else 0.0,
        }
        for slug, name, n, held, conv in cohort.values_list("journey__slug", "journey__name")
        .annotate(
            n=Count("id"),
            held=Count("id", filter=Q(held_out=True)),
            c=Count("id", filter=Q(status=EnrollmentStatus.CONVERTED)),
        )
        .order_by("-n", "journey__slug")
    ]
    holdout = GlobalHoldout.current()
    groups = (
        measurement.global_holdout_groups(
            conversions=conversions, share=holdout.share, created_before=filters.end
        )
        if holdout.share > 0
        else {"exposed": (0, 0), "held_out": (0, 0)}
    )
    by_kind = a.totals["by_kind"]
    return {
        **filters.echo(),
        "conversions": a.block["conversions"],
        "value": a.block["value"],
        "definitions": [
            {
                "name": d.name,
                "event": d.event,
                "filter": d.property_filter,
                "lookback": duration_iso(d.lookback),
                "value_property": d.value_property,
                "conversions": by_kind.get(d.pk, [0, 0.0])[0],
                "value": round(by_kind.get(d.pk, [0, 0.0])[1], 2),
            }
            for d in definitions
        ],
        "attribution": a.block,
        "by_channel": a.by_channel,
        "by_journey": a.by_journey,
        "by_step": a.by_step,
        "insights": a.insights,
        "sequences": _sequence_rows(sequences, filters.channel)[:TOP_SEQUENCES],
        "journeys": journeys,
        "holdout": holdout_block(share=holdout.share, groups=groups),
        "trend": _trend(entered=_entered_by_day(cohort), totals=a.totals, filters=filters),
    }


# --- tables (the admin's tables and their CSV) -------------------------------------------------------


def _model_columns(models: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(m, f"{MODEL_LABELS[m]} (conversions)") for m in models] + [
        (f"{m}_value", f"{MODEL_LABELS[m]} (value)") for m in models
    ]


def report_tables(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every table of a report as {name: {title, columns: [(key, label)], rows}} (the page and the CSV)."""
    models = tuple(report.get("models") or MODELS)
    tables: dict[str, dict[str, Any]] = {
        "channels": {
            "title": "Credit by channel",
            "columns": [("channel", "Channel"), ("touches", "Touches"), *_model_columns(models)],
            "rows": report.get("by_channel", []),
        },
        "steps": {
            "title": "Credit by step",
            "columns": [
                *([] if "funnel" in report else [("journey", "Journey"), ("source", "Source")]),
                ("step", "Step"),
                ("channel", "Channel"),
                ("touches", "Touches"),
                *_model_columns(models),
            ],
            "rows": report.get("by_step", []),
        },
        "sequences": {
            "title": "Top touch sequences",
            "columns": [
                ("sequence", "Sequence"),
                ("steps", "Steps"),
                ("entrants", "Entrants"),
                ("converted", "Converted"),
                ("conversion_rate", "Conversion rate"),
                ("median_time_to_convert", "Median time to convert"),
            ],
            "rows": report.get("sequences", []),
        },
        "trend": {
            "title": "By day",
            "columns": [
                ("day", "Day"),
                ("entered", "Entered"),
                ("conversions", "Conversions"),
                ("value", "Value"),
            ],
            "rows": report.get("trend", []),
        },
        "holdout": {
            "title": "Lift against the holdout",
            "columns": [
                ("share", "Holdout share"),
                ("exposed", "Exposed"),
                ("exposed_converted", "Exposed converted"),
                ("exposed_rate", "Exposed rate"),
                ("held_out", "Held out"),
                ("held_out_converted", "Held out converted"),
                ("held_out_rate", "Held-out rate"),
                ("lift", "Absolute lift"),
                ("ci95_low", "95 % CI low"),
                ("ci95_high", "95 % CI high"),
                ("relative_lift", "Relative lift"),
                ("verdict", "Verdict"),
                ("summary", "In words"),
            ],
            "rows": [_holdout_row(report["holdout"])] if report.get("holdout") else [],
        },
    }
    if "funnel" in report:
        tables["funnel"] = {
            "title": "Conversion funnel by step",
            "columns": [
                ("step", "Step"),
                ("type", "Type"),
                ("channel", "Channel"),
                ("entered", "Entrants"),
                ("sent", "Sent"),
                ("reached", "Reached"),
                ("engaged", "Opened or clicked"),
                ("held_out", "Held out (no send)"),
                ("converted", "Converted"),
            ],
            "rows": report["funnel"],
        }
    if "journeys" in report:
        tables["journeys"] = {
            "title": "Journeys",
            "columns": [
                ("journey", "Journey"),
                ("name", "Name"),
                ("entered", "Entrants"),
                ("held_out", "Held out"),
                ("converted", "Converted"),
                ("conversion_rate", "Conversion rate"),
            ],
            "rows": report["journeys"],
        }
        tables["credit_journeys"] = {
            "title": "Credit by journey",
            "columns": [
                ("journey", "Journey"),
                ("source", "Source"),
                ("touches", "Touches"),
                *_model_columns(models),
            ],
            "rows": report.get("by_journey", []),
        }
    if "definitions" in report:
        tables["definitions"] = {
            "title": "Conversions",
            "columns": [
                ("name", "Definition"),
                ("event", "Event"),
                ("lookback", "Lookback"),
                ("value_property", "Value property"),
                ("conversions", "Conversions"),
                ("value", "Value"),
            ],
            "rows": report["definitions"],
        }
    return tables


def _holdout_row(holdout: Mapping[str, Any]) -> dict[str, Any]:
    ci = holdout.get("ci95") or [None, None]
    return {**holdout, "ci95_low": ci[0], "ci95_high": ci[1]}
