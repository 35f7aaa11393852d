"""Hard limits on what one send may carry, whatever the (editable) channel policy says: sizes per channel
and overall, action URL schemes, and scheduling bounds. `message_input_problems` is the one check the send
pipeline and the journey definition call (documented in docs/limits.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator import limits

# Characters per text field of the content. Bodies per channel: what the providers take at most
# (an SMS of 10 segments, a push payload of 4 KB, an in-app card, a long email).
HEAD_MAX_CHARS = 255
BODY_MAX_CHARS = {"email": 100_000, "push": 2_000, "sms": 1_600, "in_app": 10_000}
TEXT_FIELDS = ("subject", "title", "body")
URL_LIST_KEYS = ("actions", "buttons", "action_urls")


@dataclass(frozen=True)
class InputProblem:
    field: str
    code: str
    detail: str


def _urls(content: Mapping[str, Any]) -> list[tuple[str, Any]]:
    found = []
    for key, value in content.items():
        key = str(key)
        if key == "action_url" or (key.startswith("action_url") and key[10:].lstrip("_").isdigit()):
            found.append((f"content.{key}", value))
        elif key in URL_LIST_KEYS:
            items = value if isinstance(value, list | tuple) else [value]
            found += [(f"content.{key}.{i}", v) for i, v in enumerate(items) if isinstance(v, str)]
    return found


def content_problems(*, channel: str, content: Any) -> list[InputProblem]:
    """Sizes and URLs of one message's content (channel `auto`: the largest channel's body limit)."""
    if not isinstance(content, Mapping):
        return [InputProblem("content", "invalid", "content must be a JSON object with a body.")]
    out = []
    size = limits.json_size(content)
    if size > limits.MAX_CONTENT_BYTES:
        out.append(
            InputProblem(
                "content",
                "content_too_large",
                f"content is {size} bytes as JSON; at most {limits.MAX_CONTENT_BYTES // 1024} KB.",
            )
        )
    body_max = BODY_MAX_CHARS.get(channel, max(BODY_MAX_CHARS.values()))
    for key in TEXT_FIELDS:
        value = content.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            out.append(InputProblem(f"content.{key}", "invalid", f"{key} must be a string."))
            continue
        cap = body_max if key == "body" else HEAD_MAX_CHARS
        if len(value) > cap:
            where = f" on {channel}" if key == "body" and channel in BODY_MAX_CHARS else ""
            out.append(
                InputProblem(
                    f"content.{key}",
                    "too_long",
                    f"{key} is {len(value)} characters; at most {cap}{where}.",
                )
            )
    for field, url in _urls(content):
        if url in ("", None) and field == "content.action_url":
            continue
        try:
            limits.action_url_check(url)
        except limits.LimitError as exc:
            out.append(InputProblem(field, "invalid_action_url", str(exc)))
    return out


def schedule_problems(
    *, deliver_after: datetime | None, expires_at: datetime | None, at: datetime
) -> list[InputProblem]:
    """deliver_after and expires_at within the supported range, at most a year ahead, in order."""
    out = []
    for name, value in (("deliver_after", deliver_after), ("expires_at", expires_at)):
        if value is None:
            continue
        try:
            limits.datetime_check(value)
        except limits.LimitError as exc:
            out.append(InputProblem(name, "out_of_range", str(exc)))
            continue
        if value > at + limits.MAX_SCHEDULE_AHEAD:
            ahead = limits.duration_iso(limits.MAX_SCHEDULE_AHEAD)
            out.append(InputProblem(name, "too_far_ahead", f"{name} is more than {ahead} ahead (the limit)."))
    if not out and deliver_after is not None and expires_at is not None and deliver_after > expires_at:
        out.append(
            InputProblem(
                "deliver_after",
                "after_expiry",
                "deliver_after is later than expires_at: the message would expire before it may go out.",
            )
        )
    return out


def message_input_problems(
    *,
    channel: str,
    content: Any,
    deliver_after: datetime | None = None,
    expires_at: datetime | None = None,
    at: datetime,
) -> list[InputProblem]:
    """Everything a send is refused for before any decision: content sizes and URLs, scheduling bounds."""
    return [
        *content_problems(channel=channel, content=content),
        *schedule_problems(deliver_after=deliver_after, expires_at=expires_at, at=at),
    ]
