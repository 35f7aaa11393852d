"""Measurement in the database: conversions, the touches that reached each converter, the five
attribution models, touch sequences, the funnel by step, and the lift of a holdout.

Everything over messages is set-based SQL: window functions split each conversion's credit across its
touches, and a few GROUP BYs sum it per channel, journey and step. The same statements run on
PostgreSQL and on the embedded SQLite of `make run` (window functions since SQLite 3.25; MD5 and POWER
are registered by Django); `_Dialect` holds the few expressions that differ.

Definitions (docs/measurement.md has the long form):
- a conversion is a journey's goal event (an enrollment that converted: `converted_at`, the goal event's
  `value_property`) or an event matching a `ConversionDefinition` (name, property filter, value property);
- a touch is a message whose status is one of `reached` (default delivered, opened, clicked), at the
  time it reached the recipient (delivered, else opened/clicked, else sent, else created);
- a conversion's touches are those at or before its time and inside its lookback window (for a journey:
  the journey's own sends since entry; for a definition: every message in the definition's lookback);
- touches at the same instant are tied: first and last touch split their credit equally between them,
  and position-based treats each instant as one position.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from governor.holdout import GLOBAL_SCOPE, holdout_sql
from orchestrator.models import Event, Message, MessageStatus

from .models import ConversionDefinition, Enrollment, EnrollmentStatus, Journey, JourneyVersion, StepRun

MODELS = ("first", "last", "linear", "time_decay", "position_based")
MODEL_LABELS = {
    "first": "First touch",
    "last": "Last touch",
    "linear": "Linear",
    "time_decay": "Time decay",
    "position_based": "Position-based (40/20/40)",
}
REACHED_CHOICES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.OPENED, MessageStatus.CLICKED)
DEFAULT_REACHED = (MessageStatus.DELIVERED, MessageStatus.OPENED, MessageStatus.CLICKED)
Z95 = 1.96  # two-sided 95 % normal quantile, as in the textbooks (and the hand computations)

MESSAGE = Message._meta.db_table
EVENT = Event._meta.db_table
ENROLLMENT = Enrollment._meta.db_table
STEPRUN = StepRun._meta.db_table
JOURNEY = Journey._meta.db_table
# When a touch reached the recipient: delivered, else its first engagement, else handed to the provider.
TOUCH_AT = "COALESCE(m.delivered_at, m.opened_at, m.clicked_at, m.sent_at, m.created_at)"


@dataclass(frozen=True)
class Scope:
    """What every measurement query is limited to."""

    start: datetime | None = None
    end: datetime | None = None  # exclusive
    half_life: timedelta = timedelta(days=7)
    reached: tuple[str, ...] = tuple(DEFAULT_REACHED)


class _Dialect:
    """The expressions PostgreSQL and SQLite spell differently."""

    def __init__(self) -> None:
        self.pg = connection.vendor == "postgresql"
        self.float = "DOUBLE PRECISION" if self.pg else "REAL"

    def epoch(self, expr: str) -> str:
        """Seconds since 1970 as a float (microseconds kept)."""
        if self.pg:
            return f"date_part('epoch', {expr})"
        return f"((julianday({expr}) - 2440587.5) * 86400.0)"

    def day(self, expr: str) -> str:
        """The UTC calendar day of a timestamp, as text YYYY-MM-DD."""
        if self.pg:
            return f"to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        return f"date({expr})"

    def json_number(self, column: str, key_sql: str) -> str:
        """The number held by a JSON property (a number, or text that reads as one), else 0."""
        if self.pg:
            return (
                f"(CASE jsonb_typeof({column} -> {key_sql})"
                f" WHEN 'number' THEN ({column} ->> {key_sql})::double precision"
                f" WHEN 'string' THEN (CASE WHEN ({column} ->> {key_sql}) ~ '^\\s*-?[0-9]+(\\.[0-9]+)?\\s*$'"
                f" THEN ({column} ->> {key_sql})::double precision ELSE 0 END)"
                f" ELSE 0 END)"
            )
        path = f"('$.\"' || {key_sql} || '\"')"
        return (
            f"(CASE json_type({column}, {path}) WHEN 'integer' THEN json_extract({column}, {path})"
            f" WHEN 'real' THEN json_extract({column}, {path})"
            f" WHEN 'text' THEN CAST(json_extract({column}, {path}) AS REAL) ELSE 0 END)"
        )

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list]:
        return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def _fetch(sql: str, params: Sequence[Any]) -> list[tuple]:
    """Run one report statement; on PostgreSQL with more sort memory for its window functions (the
    default 4 MB spills a 100k-conversion report to disk), for this transaction only."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SET LOCAL work_mem = '{_work_mem()}'")
        cursor.execute(sql, list(params))
        return cursor.fetchall()


def _work_mem() -> str:
    value = str((getattr(settings, "ORCHESTRATOR", {}).get("REPORTS") or {}).get("WORK_MEM", "64MB"))
    return value if re.fullmatch(r"\d{1,7}(kB|MB|GB)", value) else "64MB"


# --- conversions --------------------------------------------------------------------------------------
# A conversions query yields (kind, conv_id, recipient_id, conv_at, conv_t, start_t, value): `kind` is 0
# for journey goals and the definition's id otherwise; `conv_id` is unique across kinds (the enrollment's
# id, or event id × definitions + the definition's index: one event may convert for two definitions);
# conv_t / start_t are epoch seconds (start_t NULL: no lower bound), value a float (0 without a value).


@dataclass(frozen=True)
class Conversions:
    sql: str
    params: list
    touches: str  # "journey" (the enrollment's own sends) or "all" (every message in the lookback)
    # Bounds every touch lies within (None: unknown), to skip old and future messages early.
    earliest: datetime | None = None
    latest: datetime | None = None


def _cohort_where(scope: Scope, column: str = "en.entered_at") -> tuple[str, list]:
    where, params = [], []
    if scope.start is not None:
        where.append(f"{column} >= %s")
        params.append(scope.start)
    if scope.end is not None:
        where.append(f"{column} < %s")
        params.append(scope.end)
    return (" AND ".join(where) or "1 = 1"), params


def _goal_versions(journeys: Iterable[int]) -> list[tuple[int, str, str]]:
    """(version id, goal event, value property) of every version of these journeys."""
    rows = []
    for pk, definition in JourneyVersion.objects.filter(journey_id__in=list(journeys)).values_list(
        "pk", "definition"
    ):
        goal = (definition or {}).get("goal") or {}
        rows.append((pk, str(goal.get("event") or ""), str(goal.get("value_property") or "")))
    return rows


def journey_conversions(*, journey_ids: Sequence[int], scope: Scope) -> Conversions:
    """The goal conversions of the entry cohort (enrollments that entered within the scope)."""
    d = _Dialect()
    versions = _goal_versions(journey_ids) or [(0, "", "")]
    row = (
        "SELECT CAST(%s AS BIGINT) AS version_id, CAST(%s AS TEXT) AS goal_event,"
        " CAST(%s AS TEXT) AS value_key"
    )
    values = " UNION ALL ".join([row] * len(versions))
    cohort, cohort_params = _cohort_where(scope)
    journeys_in, journeys_params = d.in_list("en.journey_id", journey_ids or [0])
    value = d.json_number("ev.properties", "ver.value_key")
    at = "COALESCE(en.converted_at, en.ended_at)"
    sql = f"""
        SELECT 0 AS kind, en.id AS conv_id, en.recipient_id AS recipient_id, {at} AS conv_at,
               {d.epoch(at)} AS conv_t, {d.epoch("en.entered_at")} AS start_t,
               CASE WHEN ver.value_key = '' THEN 0 ELSE COALESCE((
                   SELECT {value} FROM {EVENT} ev
                    WHERE ev.recipient_id = en.recipient_id AND ev.name = ver.goal_event
                      AND ev.occurred_at = {at}
                    ORDER BY ev.id LIMIT 1), 0) END AS value
          FROM {ENROLLMENT} en
          JOIN ({values}) ver
            ON ver.version_id = en.version_id
         WHERE {journeys_in} AND en.status = %s AND {cohort}
    """
    params = [
        *[x for row in versions for x in row],
        *journeys_params,
        EnrollmentStatus.CONVERTED,
        *cohort_params,
    ]
    return Conversions(sql, params, touches="journey")


def definition_events(definition: ConversionDefinition, scope: Scope):
    """The events that count as conversions for one definition, as an ORM queryset."""
    qs = Event.objects.filter(name=definition.event)
    if scope.start is not None:
        qs = qs.filter(occurred_at__gte=scope.start)
    if scope.end is not None:
        qs = qs.filter(occurred_at__lt=scope.end)
    for key, value in sorted((definition.property_filter or {}).items()):
        qs = qs.filter(**{f"properties__{key}": value})
    return qs.order_by()


def definition_conversions(*, definitions: Sequence[ConversionDefinition], scope: Scope) -> Conversions:
    """Every event matching one of the definitions within the scope (by the event's time)."""
    d = _Dialect()
    parts, params = [], []
    for index, definition in enumerate(definitions):
        sql, event_params = (
            definition_events(definition, scope)
            .values("id", "recipient_id", "occurred_at", "properties")
            .query.sql_with_params()
        )
        value = d.json_number("c.properties", "%s") if definition.value_property else "0"
        parts.append(
            f"SELECT CAST(%s AS BIGINT) AS kind, c.id * {len(definitions)} + {index} AS conv_id,"
            " c.recipient_id AS recipient_id,"
            f" c.occurred_at AS conv_at, {d.epoch('c.occurred_at')} AS conv_t,"
            f" {d.epoch('c.occurred_at')} - %s AS start_t, {value} AS value FROM ({sql}) c"
        )
        params += [definition.pk, definition.lookback.total_seconds()]
        if definition.value_property:
            params += [definition.value_property] * value.count("%s")
        params += list(event_params)
    if not parts:  # no definition: an empty relation of the right shape
        parts.append(
            f"SELECT 0 AS kind, id AS conv_id, id AS recipient_id, occurred_at AS conv_at,"
            f" 0.0 AS conv_t, 0.0 AS start_t, 0.0 AS value FROM {EVENT} WHERE 1 = 0"
        )
    earliest = None
    if scope.start is not None and definitions:
        try:
            earliest = scope.start - max(d.lookback for d in definitions)
        except OverflowError:
            earliest = None
    return Conversions(" UNION ALL ".join(parts), params, touches="all", earliest=earliest, latest=scope.end)


# --- touches and credit ---------------------------------------------------------------------------


def _touches_sql(conversions: Conversions, scope: Scope) -> tuple[str, list, str]:
    """CTEs `conv` and `touch` (kind, conv_id, value, t, message_id, channel, source, step), kept narrow
    for the window sorts, and the body of `labelled` (the credit with its journey and step), which
    joins the journey of each credited message only after the credit is split."""
    d = _Dialect()
    reached, reached_params = d.in_list("m.status", scope.reached)
    t = d.epoch(TOUCH_AT)
    if conversions.touches == "journey":
        raw = f"""
            SELECT c.kind, c.conv_id, c.value, c.conv_t, c.start_t, m.id AS message_id, m.channel,
                   '' AS source, sr.step_id AS step, {t} AS t
              FROM conv c
              JOIN {STEPRUN} sr ON sr.enrollment_id = c.conv_id AND sr.message_id IS NOT NULL
              JOIN {MESSAGE} m ON m.id = sr.message_id
             WHERE {reached}
        """
        labelled = "SELECT credit.*, '' AS journey FROM credit"
    else:
        bounds, bounds_params = "", []
        if d.pg and conversions.latest is not None:  # a touch is created before its conversion
            bounds, bounds_params = " AND m.created_at < %s", [conversions.latest]
        if d.pg and conversions.earliest is not None:  # and reaches the recipient within the lookback
            bounds, bounds_params = f"{bounds} AND {TOUCH_AT} >= %s", [*bounds_params, conversions.earliest]
        reached_params = [*reached_params, *bounds_params]
        raw = f"""
            SELECT c.kind, c.conv_id, c.value, c.conv_t, c.start_t, m.id AS message_id, m.channel,
                   m.source AS source, '' AS step, {t} AS t
              FROM conv c
              JOIN {MESSAGE} m ON m.recipient_id = c.recipient_id AND m.created_at <= c.conv_at
             WHERE {reached}{bounds}
        """
        columns = ", ".join(f"credit.c_{m}" for m in MODELS)
        labelled = f"""
            SELECT credit.kind, credit.conv_id, credit.value, credit.message_id, credit.channel,
                   credit.source, COALESCE(sr.step_id, '') AS step, {columns}, COALESCE(j.slug, '') AS journey
              FROM credit
              LEFT JOIN {STEPRUN} sr ON sr.message_id = credit.message_id
              LEFT JOIN {ENROLLMENT} en ON en.id = sr.enrollment_id
              LEFT JOIN {JOURNEY} j ON j.id = en.journey_id
        """
    touch = (
        "SELECT kind, conv_id, value, t, message_id, channel, source, step FROM touch_raw"
        " WHERE t <= conv_t AND (start_t IS NULL OR t >= start_t)"
    )
    sql = f"conv AS ({conversions.sql}), touch_raw AS ({raw}), touch AS ({touch})"
    return sql, [*conversions.params, *reached_params], labelled


def _credit_sql(d: _Dialect) -> str:
    """CTEs `ranked`, `grouped`, `credit`: each touch's share of its conversion under every model."""
    f = d.float
    return f"""
        ranked AS (
            SELECT touch.*,
                   COUNT(*) OVER w AS n,
                   MIN(t) OVER w AS t_first,
                   MAX(t) OVER w AS t_last
              FROM touch WINDOW w AS (PARTITION BY conv_id)
        ),
        grouped AS (
            SELECT ranked.*,
                   SUM(CASE WHEN t = t_first THEN 1 ELSE 0 END) OVER w AS n_first,
                   SUM(CASE WHEN t = t_last THEN 1 ELSE 0 END) OVER w AS n_last,
                   -- Halved every half-life before the conversion; relative to the latest touch so the
                   -- weights never underflow (a common factor leaves the shares unchanged).
                   POWER(CAST(0.5 AS {f}), (t_last - t) / %s) AS decay
              FROM ranked WINDOW w AS (PARTITION BY conv_id)
        ),
        weighed AS (
            SELECT grouped.*, SUM(decay) OVER (PARTITION BY conv_id) AS decay_sum FROM grouped
        ),
        credit AS (
            SELECT kind, conv_id, value, message_id, channel, source, step,
                   CASE WHEN t = t_first THEN CAST(1 AS {f}) / n_first ELSE 0 END AS c_first,
                   CASE WHEN t = t_last THEN CAST(1 AS {f}) / n_last ELSE 0 END AS c_last,
                   CAST(1 AS {f}) / n AS c_linear,
                   decay / decay_sum AS c_time_decay,
                   CASE
                     WHEN t_first = t_last THEN CAST(1 AS {f}) / n
                     WHEN n_first + n_last = n AND t = t_first THEN CAST(0.5 AS {f}) / n_first
                     WHEN n_first + n_last = n THEN CAST(0.5 AS {f}) / n_last
                     WHEN t = t_first THEN CAST(0.4 AS {f}) / n_first
                     WHEN t = t_last THEN CAST(0.4 AS {f}) / n_last
                     ELSE CAST(0.2 AS {f}) / (n - n_first - n_last)
                   END AS c_position_based
              FROM weighed
        )
    """


def _sums() -> str:
    return ", ".join([f"SUM(c_{m})" for m in MODELS] + [f"SUM(c_{m} * value)" for m in MODELS] + ["COUNT(*)"])


@dataclass
class CreditRow:
    dimension: str  # channel, journey, step or total
    channel: str
    journey: str
    source: str
    step: str
    credit: dict[str, float]
    value: dict[str, float]
    touches: int


def credit_compute(*, conversions: Conversions, scope: Scope) -> list[CreditRow]:
    """Credit (conversions and value) under every model, per channel, per journey (or source) and per
    step, plus one `total` row: one statement."""
    d = _Dialect()
    touches, params, labelled = _touches_sql(conversions, scope)
    sums = _sums()
    sql = f"""
        WITH {touches}, {_credit_sql(d)}, labelled AS ({labelled})
        SELECT 'channel', channel, '', '', '', {sums} FROM credit GROUP BY channel
        UNION ALL
        SELECT 'journey', '', journey, CASE WHEN journey = '' THEN source ELSE '' END, '', {sums}
          FROM labelled GROUP BY journey, CASE WHEN journey = '' THEN source ELSE '' END
        UNION ALL
        SELECT 'step', channel, journey, CASE WHEN journey = '' THEN source ELSE '' END, step, {sums}
          FROM labelled GROUP BY journey, CASE WHEN journey = '' THEN source ELSE '' END, step, channel
        UNION ALL
        SELECT 'total', '', '', '', '', {sums} FROM credit
    """
    rows = _fetch(sql, [*params, scope.half_life.total_seconds()])
    n = len(MODELS)
    out = []
    for row in rows:
        sums_ = [float(x or 0) for x in row[5:]]
        out.append(
            CreditRow(
                dimension=row[0],
                channel=row[1] or "",
                journey=row[2] or "",
                source=row[3] or "",
                step=row[4] or "",
                credit=dict(zip(MODELS, sums_[:n], strict=True)),
                value=dict(zip(MODELS, sums_[n : 2 * n], strict=True)),
                touches=int(sums_[2 * n]),
            )
        )
    return out


def conversions_totals(*, conversions: Conversions) -> dict[str, Any]:
    """How many conversions, their value, and per kind (definition) and per day."""
    d = _Dialect()
    rows = _fetch(
        f"WITH conv AS ({conversions.sql}) SELECT kind, {d.day('conv_at')}, COUNT(*), SUM(value) "
        f"FROM conv GROUP BY kind, {d.day('conv_at')}",
        conversions.params,
    )
    by_kind: dict[int, list[float]] = {}
    by_day: dict[str, list[float]] = {}
    for kind, day, count, value in rows:
        for bucket, key in ((by_kind, int(kind)), (by_day, str(day))):
            acc = bucket.setdefault(key, [0, 0.0])
            acc[0] += int(count)
            acc[1] += float(value or 0)
    return {
        "conversions": sum(v[0] for v in by_kind.values()),
        "value": sum(v[1] for v in by_kind.values()),
        "by_kind": by_kind,
        "by_day": by_day,
    }


# --- sequences and the funnel (journeys) ------------------------------------------------------------


def _enrollments_cte(journey_ids: Sequence[int] | None, scope: Scope) -> tuple[str, list]:
    d = _Dialect()
    cohort, params = _cohort_where(scope)
    where = cohort
    if journey_ids is not None:
        journeys_in, journeys_params = d.in_list("en.journey_id", journey_ids or [0])
        where, params = f"{journeys_in} AND {cohort}", [*journeys_params, *params]
    at = "COALESCE(en.converted_at, en.ended_at)"
    return (
        f"""en AS (
            SELECT en.id, en.journey_id, en.held_out, en.status,
                   {d.epoch("en.entered_at")} AS entered_t, {d.epoch(at)} AS conv_t
              FROM {ENROLLMENT} en WHERE {where})""",
        params,
    )


def sequences_compute(
    *, journey_ids: Sequence[int] | None, scope: Scope, with_steps: bool
) -> list[dict[str, Any]]:
    """The ordered touches of each entrant (before converting or leaving), grouped: entrants,
    conversions, conversion rate and median time to convert (entry to goal) per sequence."""
    d = _Dialect()
    enrollments, params = _enrollments_cte(journey_ids, scope)
    reached, reached_params = d.in_list("m.status", scope.reached)
    step_label = "sr.step_id || ' (' || m.channel || ')'" if with_steps else "''"
    if d.pg:
        steps = "string_agg(label, ' → ' ORDER BY t, seq)" if with_steps else "''"
        paths = f"""
            SELECT enrollment_id, string_agg(channel, ' → ' ORDER BY t, seq) AS channels, {steps} AS steps
              FROM kept GROUP BY enrollment_id"""
    else:  # group_concat keeps the window's order (SQLite has no ORDER BY inside an aggregate before 3.44)
        steps = "group_concat(label, ' → ') OVER w" if with_steps else "''"
        paths = f"""
            SELECT DISTINCT enrollment_id, group_concat(channel, ' → ') OVER w AS channels, {steps} AS steps
              FROM kept WINDOW w AS (PARTITION BY enrollment_id ORDER BY t, seq
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"""
    sql = f"""
        WITH {enrollments},
        touch AS (
            SELECT sr.enrollment_id, sr.seq, m.channel, {step_label} AS label, {d.epoch(TOUCH_AT)} AS t
              FROM en JOIN {STEPRUN} sr ON sr.enrollment_id = en.id
              JOIN {MESSAGE} m ON m.id = sr.message_id
             WHERE {reached}
        ),
        kept AS (
            SELECT touch.* FROM touch JOIN en ON en.id = touch.enrollment_id
             WHERE en.status <> %s OR touch.t <= en.conv_t
        ),
        paths AS ({paths}),
        entrants AS (
            SELECT CASE WHEN en.held_out THEN '(held out)' ELSE COALESCE(p.channels, '(no touch)') END
                       AS channels,
                   CASE WHEN en.held_out THEN '' ELSE COALESCE(p.steps, '') END AS steps,
                   CASE WHEN en.status = %s THEN 1 ELSE 0 END AS converted,
                   CASE WHEN en.status = %s THEN en.conv_t - en.entered_t END AS ttc
              FROM en LEFT JOIN paths p ON p.enrollment_id = en.id
        ),
        ranked AS (
            SELECT channels, steps, ttc,
                   ROW_NUMBER() OVER (PARTITION BY channels, steps ORDER BY ttc) AS rn,
                   COUNT(*) OVER (PARTITION BY channels, steps) AS cnt
              FROM entrants WHERE converted = 1
        ),
        medians AS (
            SELECT channels, steps, AVG(ttc) AS median FROM ranked
             WHERE rn IN ((cnt + 1) / 2, (cnt + 2) / 2) GROUP BY channels, steps
        )
        SELECT e.channels, e.steps, COUNT(*), SUM(e.converted), MAX(md.median)
          FROM entrants e LEFT JOIN medians md ON md.channels = e.channels AND md.steps = e.steps
         GROUP BY e.channels, e.steps
         ORDER BY COUNT(*) DESC, SUM(e.converted) DESC, e.channels, e.steps
    """
    converted = EnrollmentStatus.CONVERTED
    rows = _fetch(sql, [*params, *reached_params, converted, converted, converted])
    return [
        {
            "sequence": channels,
            "steps": steps or "",
            "entrants": int(entrants),
            "converted": int(conv or 0),
            "conversion_rate": round(int(conv or 0) / int(entrants), 4) if entrants else 0.0,
            "median_seconds": round(float(median), 3) if median is not None else None,
        }
        for channels, steps, entrants, conv, median in rows
    ]


def funnel_compute(*, journey_ids: Sequence[int], scope: Scope) -> dict[str, dict[str, int]]:
    """Per step: entrants who reached it, sends cleared, sends that reached the recipient, engaged
    (opened or clicked), held-out entrants who passed it without a send, and how many converted."""
    d = _Dialect()
    enrollments, params = _enrollments_cte(journey_ids, scope)
    reached, reached_params = d.in_list("m.status", scope.reached)
    sql = f"""
        WITH {enrollments}
        SELECT sr.step_id, sr.step_type,
               COUNT(DISTINCT sr.enrollment_id),
               SUM(CASE WHEN sr.status = 'sent' THEN 1 ELSE 0 END),
               SUM(CASE WHEN m.id IS NOT NULL AND {reached} THEN 1 ELSE 0 END),
               SUM(CASE WHEN m.status IN ('opened', 'clicked') THEN 1 ELSE 0 END),
               COUNT(DISTINCT CASE WHEN en.held_out AND sr.step_type = 'send' THEN sr.enrollment_id END),
               COUNT(DISTINCT CASE WHEN en.status = %s THEN sr.enrollment_id END)
          FROM en JOIN {STEPRUN} sr ON sr.enrollment_id = en.id
          LEFT JOIN {MESSAGE} m ON m.id = sr.message_id
         GROUP BY sr.step_id, sr.step_type
    """
    rows = _fetch(sql, [*params, *reached_params, EnrollmentStatus.CONVERTED])
    keys = ("type", "entered", "sent", "reached", "engaged", "held_out", "converted")
    return {
        step: dict(zip(keys, (kind, *(int(x or 0) for x in rest)), strict=True)) for step, kind, *rest in rows
    }


# --- holdouts ---------------------------------------------------------------------------------------


def global_holdout_groups(
    *, conversions: Conversions, share: Decimal, created_before: datetime | None
) -> dict[str, tuple[int, int]]:
    """Recipients in and out of the global holdout (as assigned now), and how many of each converted."""
    held, held_params = holdout_sql(scope=GLOBAL_SCOPE, recipient_column="r.id", share=share)
    where, where_params = ("r.created_at < %s", [created_before]) if created_before else ("1 = 1", [])
    rows = _fetch(
        f"""
        WITH conv AS ({conversions.sql}),
        converters AS (SELECT DISTINCT recipient_id FROM conv)
        SELECT CASE WHEN {held} THEN 1 ELSE 0 END AS held, COUNT(*),
               SUM(CASE WHEN cv.recipient_id IS NULL THEN 0 ELSE 1 END)
          FROM orchestrator_recipient r LEFT JOIN converters cv ON cv.recipient_id = r.id
         WHERE {where}
         GROUP BY CASE WHEN {held} THEN 1 ELSE 0 END
        """,
        [*conversions.params, *held_params, *where_params, *held_params],
    )
    groups = {"exposed": (0, 0), "held_out": (0, 0)}
    for held_flag, n, converted in rows:
        groups["held_out" if held_flag else "exposed"] = (int(n), int(converted or 0))
    return groups


def lift_estimate(*, exposed: int, exposed_converted: int, held_out: int, held_out_converted: int) -> dict:
    """Absolute and relative lift of the exposed group's conversion rate over the held-out group's,
    with 95 % confidence intervals, and a plain verdict.

    Absolute: p1 - p2 ± 1.96·√(p1(1-p1)/n1 + p2(1-p2)/n2) (Wald, unpooled). Relative: p1/p2 - 1 with the
    log risk-ratio interval exp(ln(p1/p2) ± 1.96·√(1/x1 - 1/n1 + 1/x2 - 1/n2)) - 1 (needs a conversion
    in each group). Too small to tell: an expected count under the pooled rate below 5 in any cell.
    """
    n1, x1, n2, x2 = exposed, exposed_converted, held_out, held_out_converted
    p1 = x1 / n1 if n1 else None
    p2 = x2 / n2 if n2 else None
    result: dict[str, Any] = {
        "exposed_rate": round(p1, 4) if p1 is not None else 0.0,
        "held_out_rate": round(p2, 4) if p2 is not None else 0.0,
        "lift": None,
        "relative_lift": None,
        "ci95": None,
        "relative_ci95": None,
        "lift_text": "—",
    }
    if p1 is None or p2 is None:
        result["verdict"] = "no_holdout" if not n2 else "too_small"
        result["summary"] = (
            "No one was held out in this range: set a holdout share to measure whether it causes conversions."
            if not n2
            else "Too small to tell: no exposed entrants in this range."
        )
        return result
    diff = p1 - p2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    low, high = diff - Z95 * se, diff + Z95 * se
    result["lift"] = round(diff, 4)
    result["lift_text"] = f"{_points(diff)} points"
    result["ci95"] = [round(low, 4), round(high, 4)]
    if p2 > 0:
        result["relative_lift"] = round(p1 / p2 - 1, 4)
    if x1 > 0 and x2 > 0:
        se_log = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
        log_rr = math.log(p1 / p2)
        result["relative_ci95"] = [
            round(math.exp(log_rr - Z95 * se_log) - 1, 4),
            round(math.exp(log_rr + Z95 * se_log) - 1, 4),
        ]
    pooled = (x1 + x2) / (n1 + n2)
    expected = min(n * q for n in (n1, n2) for q in (pooled, 1 - pooled))
    rates = f"exposed convert at {_pct(p1)}, held out at {_pct(p2)}"
    interval = f"{_points(diff)} points, 95 % CI {_points(low)} to {_points(high)} points"
    if expected < 5:
        result["verdict"] = "too_small"
        result["summary"] = (
            f"Too small to tell: {rates} ({n2} held out, {x1 + x2} conversions in all). A comparison "
            "needs at least 5 expected conversions and 5 non-conversions in each group."
        )
    elif low > 0:
        result["verdict"] = "lift"
        relative = f", {_points(p1 / p2 - 1, scale=100)} % relative" if p2 > 0 else ""
        result["summary"] = f"It lifts conversion: {rates} ({interval}{relative})."
    elif high < 0:
        result["verdict"] = "negative"
        result["summary"] = f"It lowers conversion: {rates} ({interval})."
    else:
        result["verdict"] = "inconclusive"
        result["summary"] = f"No clear difference: {rates} ({interval}); the interval includes zero."
    return result


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _points(x: float, scale: float = 100) -> str:
    return f"{x * scale:+.1f}".replace("-", "−")
