"""Segments: named audiences as conditions on recipients, validated with the field of every error and
compiled to ONE set-based query (CONTRACT.md v1.1).

A condition is one of
  {attribute: k, op, value}                 eq, ne, in, exists, gt, gte, lt, lte (numbers or dates)
  {field: timezone|locale, op, value}       eq, ne, in, exists
  {field: reachable, op, value}             eq / ne a channel, in channels, exists (any channel)
  {field: opted_in, op, value, purpose?}    eq / ne a channel: reachable there and not opted out
  {event: name, min_count?: 1, within?}     did event X at least N times (in the last D)
  {message: received|opened|clicked, journey?: slug, campaign?: id, channel?, within?, min_count?}
and any of them may carry `"negate": true`. Conditions combine with `match`: all or any.

Everything compiles to a Django boolean expression over Recipient: attribute equality and presence use
the jsonb containment / key operators (the GIN index on attributes on PostgreSQL), behaviour uses
semi-joins on the (name, occurred_at) and (recipient, created_at) indexes. No Python loop over people.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import BooleanField, Count, Exists, F, Func, OuterRef, Q
from django.db.models.fields.json import compile_json_path
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime, parse_duration

from .models import CLEARED_STATUSES, Channel, ContactPoint, Event, Message, MessageStatus, Purpose, Source

MATCHES = ("all", "any")
OPS = ("eq", "ne", "in", "exists", "gt", "gte", "lt", "lte")
FIELDS = ("timezone", "locale", "reachable", "opted_in")
MESSAGE_KINDS = ("received", "opened", "clicked")
MAX_CONDITIONS = 50
MAX_IN_VALUES = 1000
MAX_TEXT = 200
MAX_WITHIN = timedelta(days=3660)
MAX_COUNT = 10_000
# JSON numbers beyond this lose precision as floats; nobody segments on them.
MAX_NUMBER = 1e15
_RECEIVED = sorted(CLEARED_STATUSES - {MessageStatus.ACCEPTED, MessageStatus.FAILED})
_OPENED = [MessageStatus.OPENED, MessageStatus.CLICKED]


class SegmentInvalid(Exception):
    """The segment cannot be saved: `errors` maps a field path (`conditions[1].op`) to messages."""

    def __init__(self, errors: Mapping[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = dict(errors)


# ---- validation --------------------------------------------------------------------------------------


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar_error(value: Any) -> str | None:
    if isinstance(value, str):
        return None if len(value) <= MAX_TEXT else f"at most {MAX_TEXT} characters."
    if isinstance(value, bool):
        return None
    if _is_number(value):
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            return "a number this large cannot be compared."
        return None
    return "expected a string, a number or true/false."


def _duration(value: Any) -> timedelta | None:
    """An ISO 8601 duration (P30D, PT12H) or HH:MM:SS within ten years; None if it is not one."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = parse_duration(value.strip())
    except (OverflowError, ValueError):
        return None
    if parsed is None or parsed <= timedelta(0) or parsed > MAX_WITHIN:
        return None
    return parsed


def _moment(value: Any) -> datetime | None:
    """An ISO date or date-time (naive means UTC), within years 1..9999."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            if day is None:
                return None
            parsed = datetime.combine(day, time.min)
    except (OverflowError, ValueError):
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Where:
    errors: dict[str, list[str]]
    prefix: str

    def add(self, key: str, message: str) -> None:
        self.errors.setdefault(f"{self.prefix}.{key}" if key else self.prefix, []).append(message)


def _check_keys(w: _Where, cond: Mapping, allowed: set[str]) -> None:
    for key in cond:
        if key not in allowed:
            w.add(str(key)[:50], f"unknown key; a condition of this kind takes {', '.join(sorted(allowed))}.")


def _check_comparison(w: _Where, op: str, value: Any, *, numeric_or_date: bool) -> None:
    if op == "exists":
        if not isinstance(value, bool) and value is not None:
            w.add("value", "exists takes true (is set) or false (is not set), or no value.")
    elif op == "in":
        if not isinstance(value, list) or not value:
            w.add("value", "in takes a non-empty list of values.")
        elif len(value) > MAX_IN_VALUES:
            w.add("value", f"in takes at most {MAX_IN_VALUES} values.")
        else:
            for n, item in enumerate(value):
                error = _scalar_error(item)
                if error:
                    w.add(f"value[{n}]", error)
                    break
    elif op in ("eq", "ne"):
        error = _scalar_error(value)
        if error:
            w.add("value", error)
    elif not numeric_or_date:
        w.add("op", f"{op} compares numbers and dates; this field takes eq, ne, in or exists.")
    elif _is_number(value):
        error = _scalar_error(value)
        if error:
            w.add("value", error)
    elif isinstance(value, Mapping) and set(value) == {"ago"}:
        if _duration(value["ago"]) is None:
            w.add("value", '{"ago": ...} takes an ISO 8601 duration up to ten years, e.g. "P30D".')
    elif _moment(value) is None:
        w.add(
            "value",
            f"{op} takes a number, an ISO date or date-time (2026-03-01, 2026-03-01T10:00:00Z) "
            'or {"ago": "P30D"}.',
        )


def _check_channel(w: _Where, value: Any, *, many: bool = False) -> None:
    values = value if many and isinstance(value, list) else [value]
    if many and (not isinstance(value, list) or not value):
        w.add("value", f"expected a non-empty list of channels ({', '.join(Channel.values)}).")
        return
    for item in values:
        if item not in Channel.values:
            w.add("value", f"{item!r} is not a channel; expected one of {', '.join(Channel.values)}.")
            return


def _check_within(w: _Where, cond: Mapping) -> None:
    if "within" in cond and _duration(cond["within"]) is None:
        w.add("within", 'expected an ISO 8601 duration up to ten years, e.g. "P30D" or "PT12H".')
    if "min_count" in cond:
        n = cond["min_count"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_COUNT:
            w.add("min_count", f"expected a whole number from 1 to {MAX_COUNT}.")


def _condition_validate(w: _Where, cond: Any) -> None:
    if not isinstance(cond, Mapping):
        w.add(
            "", "a condition is an object: {attribute, op, value}, {field, op, value}, {event} or {message}."
        )
        return
    if "negate" in cond and not isinstance(cond["negate"], bool):
        w.add("negate", "negate is true or false.")
    kinds = [k for k in ("attribute", "field", "event", "message") if k in cond]
    if len(kinds) != 1:
        w.add("", "a condition names exactly one of attribute, field, event or message.")
        return
    kind = kinds[0]
    if kind == "attribute":
        _check_keys(w, cond, {"attribute", "op", "value", "negate"})
        key = cond["attribute"]
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_TEXT:
            w.add("attribute", f"the attribute name is a non-empty string of at most {MAX_TEXT} characters.")
        op = cond.get("op")
        if op not in OPS:
            w.add("op", f"unknown operator {str(op)[:30]!r}; expected one of {', '.join(OPS)}.")
            return
        if op != "exists" and "value" not in cond:
            w.add("value", f"{op} needs a value.")
            return
        _check_comparison(w, op, cond.get("value"), numeric_or_date=True)
    elif kind == "field":
        field = cond["field"]
        if field not in FIELDS:
            w.add("field", f"unknown field {str(field)[:30]!r}; expected one of {', '.join(FIELDS)}.")
            return
        _check_keys(
            w, cond, {"field", "op", "value", "negate", *({"purpose"} if field == "opted_in" else ())}
        )
        op = cond.get("op")
        if op not in OPS:
            w.add("op", f"unknown operator {str(op)[:30]!r}; expected one of {', '.join(OPS)}.")
            return
        value = cond.get("value")
        if op != "exists" and "value" not in cond:
            w.add("value", f"{op} needs a value.")
            return
        if field in ("timezone", "locale"):
            _check_comparison(w, op, value, numeric_or_date=False)
            if op in ("eq", "ne") and not isinstance(value, str):
                w.add("value", f"{field} is compared with a string.")
        elif field == "reachable":
            if op in ("eq", "ne"):
                _check_channel(w, value)
            elif op == "in":
                _check_channel(w, value, many=True)
            elif op == "exists":
                _check_comparison(w, op, value, numeric_or_date=False)
            else:
                w.add("op", "reachable takes eq, ne (a channel), in (channels) or exists (any channel).")
        else:  # opted_in
            if op not in ("eq", "ne"):
                w.add("op", "opted_in takes eq or ne with a channel (and optionally a purpose).")
                return
            _check_channel(w, value)
            if "purpose" in cond and cond["purpose"] not in Purpose.values:
                w.add("purpose", f"expected one of {', '.join(Purpose.values)}.")
    elif kind == "event":
        _check_keys(w, cond, {"event", "min_count", "within", "negate"})
        name = cond["event"]
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_TEXT:
            w.add("event", f"the event name is a non-empty string of at most {MAX_TEXT} characters.")
        _check_within(w, cond)
    else:
        _check_keys(w, cond, {"message", "journey", "campaign", "channel", "min_count", "within", "negate"})
        if cond["message"] not in MESSAGE_KINDS:
            w.add("message", f"expected one of {', '.join(MESSAGE_KINDS)}.")
        if "journey" in cond and "campaign" in cond:
            w.add("", "a message condition names a journey or a campaign, not both.")
        if "journey" in cond and (
            not isinstance(cond["journey"], str) or not 0 < len(cond["journey"]) <= 100
        ):
            w.add("journey", "expected a journey slug.")
        if "campaign" in cond and (
            not isinstance(cond["campaign"], int)
            or isinstance(cond["campaign"], bool)
            or not 0 < cond["campaign"] < 2**62
        ):
            w.add("campaign", "expected a campaign id.")
        if "channel" in cond:
            _check_channel(w, cond["channel"])
        _check_within(w, cond)


def segment_definition_validate(*, match: Any, conditions: Any) -> None:
    """Raise SegmentInvalid naming the field of every problem (`conditions[2].value`)."""
    errors: dict[str, list[str]] = {}
    if match not in MATCHES:
        errors["match"] = ['match is "all" (every condition) or "any" (at least one).']
    if not isinstance(conditions, list):
        errors["conditions"] = ["conditions is a list of condition objects."]
    elif len(conditions) > MAX_CONDITIONS:
        errors["conditions"] = [f"at most {MAX_CONDITIONS} conditions."]
    elif _has_nul(conditions):
        errors["conditions"] = ["text may not contain NUL characters."]
    else:
        for n, cond in enumerate(conditions):
            _condition_validate(_Where(errors, f"conditions[{n}]"), cond)
    if errors:
        raise SegmentInvalid(errors)


# ---- compilation -------------------------------------------------------------------------------------

_SQL_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class AttributeCompare(Func):
    """`attributes[key] <op> value` for numbers or dates, false when the attribute is missing or of another
    type (never a cast error): jsonb_typeof / a guarded timestamptz cast on PostgreSQL, json_type /
    julianday on SQLite."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, key: str, op: str, value: float | datetime):
        super().__init__(F("attributes"))
        self.key, self.op, self.value = key, op, value

    def as_sql(self, compiler, connection, **extra):  # pragma: no cover - every backend has its own
        raise NotImplementedError(f"segments do not support {connection.vendor}")

    def as_postgresql(self, compiler, connection, **extra):
        (col, _), sql_op = compiler.compile(self.source_expressions[0]), _SQL_OPS[self.op]
        # COALESCE: a missing attribute is "false", never NULL (so a negated condition includes it).
        if isinstance(self.value, datetime):
            return f"COALESCE(orch_try_timestamptz({col} ->> %s) {sql_op} %s, false)", [self.key, self.value]
        return (
            f"COALESCE((CASE WHEN jsonb_typeof({col} -> %s) = 'number' THEN ({col} ->> %s)::numeric END)"
            f" {sql_op} %s, false)",
            [self.key, self.key, self.value],
        )

    def as_sqlite(self, compiler, connection, **extra):
        (col, _), sql_op = compiler.compile(self.source_expressions[0]), _SQL_OPS[self.op]
        path = compile_json_path([self.key])
        if isinstance(self.value, datetime):
            julian = self.value.timestamp() / 86400 + 2440587.5
            return (
                f"COALESCE((CASE WHEN json_type({col}, %s) = 'text'"
                f" THEN julianday(json_extract({col}, %s)) END) {sql_op} %s, 0)",
                [path, path, julian],
            )
        return (
            f"COALESCE((CASE WHEN json_type({col}, %s) IN ('integer', 'real')"
            f" THEN json_extract({col}, %s) END) {sql_op} %s, 0)",
            [path, path, self.value],
        )


class AttributeEquals(Func):
    """`attributes[key] == value` with JSON types respected, where jsonb containment is not available
    (SQLite: json_type + json_extract)."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, key: str, value: Any):
        super().__init__(F("attributes"))
        self.key, self.value = key, value

    def as_sql(self, compiler, connection, **extra):
        (col, _) = compiler.compile(self.source_expressions[0])
        path = compile_json_path([self.key])
        # COALESCE: a missing attribute is "not equal", never NULL (so `ne` includes it, as on PostgreSQL).
        if isinstance(self.value, bool):
            return f"COALESCE(json_type({col}, %s) = %s, 0)", [path, "true" if self.value else "false"]
        if _is_number(self.value):
            return (
                f"COALESCE(json_type({col}, %s) IN ('integer', 'real') AND json_extract({col}, %s) = %s, 0)",
                [path, path, self.value],
            )
        return (
            f"COALESCE(json_type({col}, %s) = 'text' AND json_extract({col}, %s) = %s, 0)",
            [path, path, self.value],
        )


def _attribute_equals(key: str, value: Any) -> Q:
    if connection.vendor == "postgresql":
        return Q(attributes__contains={key: value})  # jsonb @>: the GIN index on attributes
    return Q(AttributeEquals(key, value))


def _compare_value(value: Any, at: datetime) -> float | datetime:
    if _is_number(value):
        return float(value)
    if isinstance(value, Mapping):
        return at - _duration(value["ago"])
    return _moment(value)


def _attribute_q(cond: Mapping, at: datetime) -> Q:
    key, op, value = cond["attribute"], cond["op"], cond.get("value")
    if op == "eq":
        return _attribute_equals(key, value)
    if op == "ne":
        return ~_attribute_equals(key, value)
    if op == "in":
        q = _attribute_equals(key, value[0])
        for item in value[1:]:
            q |= _attribute_equals(key, item)
        return q
    if op == "exists":
        q = Q(attributes__has_key=key)
        return ~q if value is False else q
    return Q(AttributeCompare(key, op, _compare_value(value, at)))


def _column_q(column: str, op: str, value: Any) -> Q:
    if op == "eq":
        return Q(**{column: value})
    if op == "ne":
        return ~Q(**{column: value})
    if op == "in":
        return Q(**{f"{column}__in": [str(v) for v in value]})
    present = ~Q(**{column: ""})
    return ~present if value is False else present


def _reachable(channels: list[str]) -> Exists:
    """Reachable as sending sees it (the one rule in orchestrator.selectors: opted in, deliverable)."""
    from .selectors import REACHABLE  # selectors imports this module

    return Exists(ContactPoint.objects.filter(REACHABLE, recipient_id=OuterRef("pk"), channel__in=channels))


def _field_q(cond: Mapping) -> Q:
    field, op, value = cond["field"], cond["op"], cond.get("value")
    if field in ("timezone", "locale"):
        return _column_q(field, op, value)
    if field == "reachable":
        if op == "exists":
            q = Q(_reachable(list(Channel.values)))
            return ~q if value is False else q
        q = Q(_reachable(value if op == "in" else [value]))
        return ~q if op == "ne" else q
    # opted_in: reachable on the channel and no opt-out there (for the purpose, or any purpose).
    opt_outs = {"recipient_id": OuterRef("pk"), "channel": value, "opted_in": False}
    if "purpose" in cond:
        opt_outs["purpose"] = cond["purpose"]
    from .models import Preference

    q = Q(_reachable([value])) & ~Q(Exists(Preference.objects.filter(**opt_outs)))
    return ~q if op == "ne" else q


def _at_least(queryset, n: int) -> Q:
    """Recipients with at least n rows of `queryset` (a correlated, LIMITed probe of an index)."""
    return Q(Exists(queryset.filter(recipient_id=OuterRef("pk")).order_by()[n - 1 : n]))


def _event_q(cond: Mapping, at: datetime) -> Q:
    events = Event.objects.filter(name=cond["event"], occurred_at__lte=at)
    if "within" in cond:
        events = events.filter(occurred_at__gt=at - _duration(cond["within"]))
    n = cond.get("min_count", 1)
    if n == 1:
        return Q(Exists(events.filter(recipient_id=OuterRef("pk"))))
    # Set-based: one pass over the (name, occurred_at) index, grouped, then a hash semi-join.
    counted = events.values("recipient_id").annotate(n=Count("id")).filter(n__gte=n).values("recipient_id")
    return Q(pk__in=counted)


def campaign_source_ref_prefix(campaign_id: int) -> str:
    """Campaign messages carry `"<id> · <name>"` in source_ref (like journeys' `"<slug> · <step>"`)."""
    return f"{campaign_id} · "


def _message_q(cond: Mapping, at: datetime) -> Q:
    messages = Message.objects.filter(created_at__lte=at)
    if cond["message"] == "received":
        messages = messages.filter(status__in=_RECEIVED)
    elif cond["message"] == "opened":
        messages = messages.filter(status__in=_OPENED)
    else:
        messages = messages.filter(status=MessageStatus.CLICKED)
    if "journey" in cond:
        messages = messages.filter(source=Source.JOURNEY, source_ref__startswith=f"{cond['journey']} · ")
    if "campaign" in cond:
        messages = messages.filter(
            source=Source.CAMPAIGN, source_ref__startswith=campaign_source_ref_prefix(cond["campaign"])
        )
    if "channel" in cond:
        messages = messages.filter(channel=cond["channel"])
    if "within" in cond:
        messages = messages.filter(created_at__gt=at - _duration(cond["within"]))
    # Probes the (recipient, created_at) history index per candidate recipient.
    return _at_least(messages, cond.get("min_count", 1))


def condition_q(cond: Mapping, *, at: datetime) -> Q:
    """One validated condition as a boolean expression over Recipient."""
    if "attribute" in cond:
        q = _attribute_q(cond, at)
    elif "field" in cond:
        q = _field_q(cond)
    elif "event" in cond:
        q = _event_q(cond, at)
    else:
        q = _message_q(cond, at)
    return ~q if cond.get("negate") else q


def segment_q(*, match: str, conditions: list[Mapping], at: datetime) -> Q:
    """The whole segment as one boolean expression (no conditions: everyone)."""
    q = Q()
    for cond in conditions:
        part = condition_q(cond, at=at)
        q = (q | part if match == "any" else q & part) if q else part
    return q


# ---- plain words for the admin ---------------------------------------------------------------------

_OP_WORDS = {
    "eq": "is",
    "ne": "is not",
    "in": "is one of",
    "gt": "is more than",
    "gte": "is at least",
    "lt": "is less than",
    "lte": "is at most",
}


def _value_words(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_value_words(v) for v in value)
    if isinstance(value, Mapping) and "ago" in value:
        return f"{value['ago']} ago"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def condition_describe(cond: Mapping) -> str:
    """A condition in plain words: "did cart_abandoned at least 2 times in the last P30D"."""
    neg = "NOT " if cond.get("negate") else ""
    if "attribute" in cond:
        if cond.get("op") == "exists":
            has = cond.get("value") is not False
            return f"{neg}{cond['attribute']} is {'set' if has else 'not set'}"
        return f"{neg}{cond['attribute']} {_OP_WORDS.get(cond.get('op'), cond.get('op'))} " + _value_words(
            cond.get("value")
        )
    if "field" in cond:
        field, op, value = cond["field"], cond.get("op"), cond.get("value")
        if field == "reachable":
            if op == "exists":
                return f"{neg}reachable on {'some' if value is not False else 'no'} channel"
            word = "not reachable" if op == "ne" else "reachable"
            return f"{neg}{word} on {_value_words(value)}"
        if field == "opted_in":
            purpose = f" for {cond['purpose']}" if "purpose" in cond else ""
            word = "not opted in" if op == "ne" else "opted in"
            return f"{neg}{word} on {value}{purpose}"
        if op == "exists":
            return f"{neg}{field} is {'set' if value is not False else 'not set'}"
        return f"{neg}{field} {_OP_WORDS.get(op, op)} {_value_words(value)}"
    within = f" in the last {cond['within']}" if "within" in cond else ""
    times = f" at least {cond['min_count']} times" if cond.get("min_count", 1) > 1 else ""
    if "event" in cond:
        return f"{neg}did {cond['event']}{times}{within}"
    of = ""
    if "journey" in cond:
        of = f" of journey {cond['journey']}"
    elif "campaign" in cond:
        of = f" of campaign {cond['campaign']}"
    channel = f" on {cond['channel']}" if "channel" in cond else ""
    return f"{neg}{cond['message']} a message{of}{channel}{times}{within}"


def segment_describe(*, match: str, conditions: list[Mapping]) -> str:
    if not conditions:
        return "Everyone"
    joiner = " and " if match == "all" else " or "
    return joiner.join(condition_describe(c) for c in conditions)
