"""Input limits every entry point enforces (API, admin, journey definitions), documented in docs/limits.md.

One place for the numbers and the small pure checks behind them, so a bad value is refused with a 400
naming the field instead of overflowing a column, a timedelta or the scheduler later. The floor layer:
imports nothing of the other apps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.dateparse import parse_duration
from django.utils.duration import duration_iso_string

# Durations (waits, timeouts, windows, shelf lives, cool-downs): positive and at most a year.
MAX_DURATION = timedelta(days=365)
# How far ahead a message may be scheduled (deliver_after) or kept (expires_at).
MAX_SCHEDULE_AHEAD = timedelta(days=365)
# Any date-time the API accepts lies in this range (beyond it, timedelta arithmetic overflows).
DATETIME_MIN = datetime(2000, 1, 1, tzinfo=UTC)
DATETIME_MAX = datetime(2100, 1, 1, tzinfo=UTC)
# governor/check's `at`: a dry run a year back or ahead at most.
CHECK_AT_RANGE = timedelta(days=365)
# JSON documents stored on a row: event properties, recipient attributes.
MAX_JSON_BYTES = 32 * 1024
# Message content as a whole (all fields, JSON-encoded).
MAX_CONTENT_BYTES = 64 * 1024
# Nesting of any JSON request body.
MAX_JSON_DEPTH = 32
MAX_PUSH_TOKENS = 20
MAX_JOURNEY_STEPS = 100
MAX_URL_CHARS = 2048
# external_id travels in URLs (GET recipients/{external_id}/): unreserved characters plus @ : + =.
EXTERNAL_ID_MAX = 200
EXTERNAL_ID_RE = re.compile(r"[A-Za-z0-9._~@:+=-]+")
EXTERNAL_ID_HELP = (
    "At most 200 characters from A-Z a-z 0-9 . _ ~ @ : + = - (URL-safe, so GET recipients/{id}/ reaches it)."
)
DURATION_HELP = "ISO 8601 duration, e.g. PT2H or P1D; at most P365D."


class LimitError(ValueError):
    """A value outside its documented limit; the message is the plain reason, `code` a stable word."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


# --- durations ------------------------------------------------------------------------------------


def duration_parse(value: Any, *, allow_zero: bool = False) -> timedelta:
    """An ISO 8601 duration (`PT2H`, `P1D`; `HH:MM:SS` also read) within (0, MAX_DURATION].

    Raises LimitError with a plain reason; never OverflowError (`P99999999999D` is refused here).
    """
    if isinstance(value, timedelta):
        parsed = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            parsed = parse_duration(value.strip())
        except (OverflowError, ValueError) as exc:
            raise LimitError(
                f"{value!r} is longer than {duration_iso(MAX_DURATION)} (the limit).", "duration_too_long"
            ) from exc
        if parsed is None:
            raise LimitError(f"{value!r} is not an ISO 8601 duration (e.g. PT2H or P1D).")
    else:
        raise LimitError(f"{_short(value)} is not an ISO 8601 duration (e.g. PT2H or P1D).")
    if parsed < timedelta(0) or (parsed == timedelta(0) and not allow_zero):
        raise LimitError(f"{duration_iso(parsed)} must be longer than zero.", "non_positive_duration")
    if parsed > MAX_DURATION:
        raise LimitError(
            f"{duration_iso(parsed)} is longer than {duration_iso(MAX_DURATION)} (the limit).",
            "duration_too_long",
        )
    return parsed


def duration_iso(value: timedelta) -> str:
    """ISO 8601 in its shortest usual form: P1D, PT4H, PT30M, P1DT2H."""
    if value < timedelta(0):
        return duration_iso_string(value)
    days, rest = value.days, value.seconds
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"P{days}D" if days else "P"
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if seconds or value.microseconds:
        frac = f".{value.microseconds:06d}".rstrip("0") if value.microseconds else ""
        clock += f"{seconds}{frac}S"
    if clock:
        text += "T" + clock
    return text if text != "P" else "PT0S"


# --- date-times -----------------------------------------------------------------------------------


def datetime_check(value: datetime) -> None:
    if not DATETIME_MIN <= value < DATETIME_MAX:
        raise LimitError(
            f"{value.isoformat()} is outside the supported range "
            f"({DATETIME_MIN:%Y-%m-%d} to {DATETIME_MAX:%Y-%m-%d})."
        )


# --- JSON documents -------------------------------------------------------------------------------


def json_size(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON encoding."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def json_object_check(value: Any, *, what: str, limit: int = MAX_JSON_BYTES) -> None:
    if not isinstance(value, Mapping):
        raise LimitError(f"{what} must be a JSON object.")
    size = json_size(value)
    if size > limit:
        raise LimitError(f"{what} is {size} bytes as JSON; at most {limit // 1024} KB.")


def json_walk(value: Any) -> Iterator[tuple[str, Any, int]]:
    """(path, node, depth) for every node and key of a parsed JSON document, iteratively (no recursion on
    a deeply nested array). Paths are dotted: `content.body`, `steps.3.id`."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, node, depth = stack.pop()
        yield path, node, depth
        if isinstance(node, Mapping):
            for key, child in node.items():
                child_path = f"{path}.{key}" if path else str(key)
                yield child_path, key, depth + 1
                stack.append((child_path, child, depth + 1))
        elif isinstance(node, list | tuple):
            for i, child in enumerate(node):
                stack.append((f"{path}.{i}" if path else str(i), child, depth + 1))


def json_body_problem(value: Any) -> tuple[str, str] | None:
    """(field, reason) for what PostgreSQL or the services cannot take in a request body, else None:
    a NUL character in any string or key, or nesting deeper than MAX_JSON_DEPTH."""
    for path, node, depth in json_walk(value):
        if depth > MAX_JSON_DEPTH:
            return path.split(".")[0] or "non_field_errors", f"Nested deeper than {MAX_JSON_DEPTH} levels."
        if isinstance(node, str) and "\x00" in node:
            return path or "non_field_errors", "NUL characters (\\u0000) are not allowed in text."
    return None


# --- identifiers and URLs -------------------------------------------------------------------------


def external_id_check(value: str) -> None:
    if not value:
        raise LimitError("external_id is required.")
    if len(value) > EXTERNAL_ID_MAX or not EXTERNAL_ID_RE.fullmatch(value) or value in (".", ".."):
        raise LimitError(f"{_short(value)} is not a valid external_id. {EXTERNAL_ID_HELP}")


def app_url_schemes() -> tuple[str, ...]:
    """Schemes an action_url may use besides http and https (settings.ORCHESTRATOR["APP_URL_SCHEMES"])."""
    extra = getattr(settings, "ORCHESTRATOR", {}).get("APP_URL_SCHEMES", ("app",))
    return ("http", "https", *(s.lower() for s in extra))


def action_url_check(value: Any) -> None:
    """http, https, a configured app scheme (`app://cart`) or a path inside the product (`/cart`)."""
    if not isinstance(value, str):
        raise LimitError("action_url must be a string.")
    if len(value) > MAX_URL_CHARS:
        raise LimitError(f"action_url is {len(value)} characters; at most {MAX_URL_CHARS}.")
    url = value.strip()
    if not url or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise LimitError("action_url must be a URL without spaces or control characters.")
    schemes = app_url_schemes()
    if url.startswith("/") and not url.startswith("//"):
        return
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise LimitError(f"{_short(url)} is not a URL.") from exc
    if scheme not in schemes:
        raise LimitError(
            f"action_url scheme {scheme + ':' if scheme else '(none)'} is not allowed; "
            f"use {', '.join(s + ':' for s in schemes)} or a path starting with /."
        )


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…'"
