"""Channel policy lint: does this message (or journey send step) fit its channel's job?

One function, `message_lint`, returns violations with a stable code, a severity (block refuses the
message; warn is recorded on it) and a plain-language reason that names the channel's job. The limits
come from the channel's ChannelPolicy row (editable in the admin), or the shipped defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from .defaults import DEFAULT_POLICIES


class Severity(StrEnum):
    BLOCK = "block"
    WARN = "warn"


@dataclass(frozen=True)
class Violation:
    code: str
    severity: Severity
    reason: str


PURPOSE_LABELS = {
    "transactional": "transactional confirmations",
    "alert": "rare high-trust alerts",
    "engagement": "engagement",
    "promotional": "promotional messages",
}
_URL = re.compile(r"\b(?:https?|app)://[^\s<>\"')]+", re.IGNORECASE)
# The GSM 03.38 basic alphabet: anything outside it makes an SMS UCS-2 (70 characters per segment).
_GSM = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


@dataclass(frozen=True)
class PolicyView:
    """The limits the lint reads, from a ChannelPolicy row or the defaults (no DB needed)."""

    channel: str
    job: str
    allowed_purposes: tuple[str, ...] = ()
    subject_required: bool = False
    title_required: bool = False
    context_required: bool = False
    product_url_prefixes: tuple[str, ...] = ()
    title_max_chars: int | None = None
    body_max_chars: int | None = None
    body_max_words: int | None = None
    segment_chars: int | None = None
    max_actions: int | None = None
    marketing_terms: tuple[str, ...] = ()
    # Not lint limits, but the rest of the channel's policy the pipeline needs in the same read.
    default_ttl: timedelta | None = None
    purpose_fit: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_fields(cls, channel: str, fields: Mapping[str, Any]) -> PolicyView:
        names = set(cls.__dataclass_fields__) - {"channel"}
        kwargs = {k: v for k, v in fields.items() if k in names}
        for key in ("allowed_purposes", "product_url_prefixes", "marketing_terms"):
            kwargs[key] = tuple(kwargs.get(key) or ())
        kwargs["purpose_fit"] = tuple(sorted(dict(kwargs.get("purpose_fit") or {}).items()))
        return cls(channel=channel, **kwargs)

    def fit(self, purpose: str) -> int:
        """How well this channel's job fits a purpose, 0 (never) to 10 (its very job)."""
        return dict(self.purpose_fit).get(purpose, 0)


SNAPSHOT_PART = "channels_app.policies"


def channel_policy_views_load() -> MappingProxyType:
    """Every channel's policy as the lint and the pipeline see it, in one query: its row if there is
    one, else the shipped defaults (the settings snapshot's loader, the only reader of the table)."""
    from .models import ChannelPolicy  # the lint itself stays importable without the app registry

    names = [f for f in PolicyView.__dataclass_fields__ if f != "channel"]
    views = {
        row["channel"]: PolicyView.from_fields(row["channel"], row)
        for row in ChannelPolicy.objects.values("channel", *names)
    }
    for channel, fields in DEFAULT_POLICIES.items():
        if channel not in views:
            views[channel] = PolicyView.from_fields(channel, fields)
    return MappingProxyType(views)


def channel_policy_views(snapshot=None) -> Mapping[str, PolicyView]:
    """Every channel's policy, from the settings snapshot (current as of this request; read-only), or
    from the given one."""
    from orchestrator.snapshot import snapshot_current

    return (snapshot or snapshot_current()).part(SNAPSHOT_PART)


def channel_policy_view(*, channel: str) -> PolicyView:
    """One channel's policy as the lint sees it."""
    return channel_policy_views().get(channel) or PolicyView.from_fields(channel, {"job": channel})


def _text(content: Mapping[str, Any], key: str) -> str:
    value = content.get(key)
    return value.strip() if isinstance(value, str) else ""


def _actions(content: Mapping[str, Any]) -> list[str]:
    """Every action the content carries: action_url, action lists/buttons, and links in the body."""
    found: list[str] = []
    if _text(content, "action_url"):
        found.append(_text(content, "action_url"))
    for key in ("actions", "buttons", "action_urls"):
        extra = content.get(key)
        if isinstance(extra, list | tuple):
            found.extend(str(a) for a in extra)
        elif extra:
            found.append(str(extra))
    found.extend(k for k in content if re.fullmatch(r"action_url_?\d+", str(k)))
    for url in _URL.findall(_text(content, "body")):
        if url not in found:
            found.append(url)
    return found


def _sms_segments(body: str, segment_chars: int) -> tuple[int, int]:
    """(segments, characters per segment): UCS-2 messages carry 70 characters per segment, not 160."""
    per = segment_chars if all(ch in _GSM for ch in body) else min(segment_chars, 70)
    return max(1, -(-len(body) // per)), per


def _marketing_hits(text: str, terms: tuple[str, ...]) -> list[str]:
    lowered = text.lower()
    hits = []
    for term in terms:
        t = term.lower().strip()
        if not t:
            continue
        pattern = re.escape(t) if not t[0].isalnum() else r"\b" + re.escape(t)
        if t[-1].isalnum():
            pattern += r"\b"
        if re.search(pattern, lowered):
            hits.append(term)
    return hits


def policy_lint(*, policy: PolicyView, purpose: str, content: Mapping[str, Any]) -> list[Violation]:
    """The lint against an explicit policy (the admin's "try it" preview lints unsaved edits with it)."""
    ch = policy.channel
    job = policy.job.rstrip(".")
    out: list[Violation] = []

    def add(code: str, severity: Severity, detail: str) -> None:
        out.append(Violation(code, severity, f"{job}; {detail}"))

    title, subject, body = _text(content, "title"), _text(content, "subject"), _text(content, "body")
    head = subject or title

    if policy.allowed_purposes and purpose not in policy.allowed_purposes:
        allowed = " and ".join(PURPOSE_LABELS.get(p, p) for p in policy.allowed_purposes)
        add(
            f"{ch}_purpose",
            Severity.BLOCK,
            f"it carries only {allowed}, not {PURPOSE_LABELS.get(purpose, purpose)}. Use another channel.",
        )
    if not body:
        add(f"{ch}_no_body", Severity.BLOCK, "this message has no body.")
    if policy.subject_required and not subject:
        add(f"{ch}_no_subject", Severity.BLOCK, "this message has no subject; people decide from it.")
    if policy.title_required and not title:
        add(f"{ch}_no_title", Severity.WARN, "this message has no title; phones show the app name alone.")

    too_long = []
    if policy.title_max_chars and len(head) > policy.title_max_chars:
        which = "subject" if subject else "title"
        too_long.append(f"the {which} is {len(head)} characters (at most {policy.title_max_chars})")
    words = len(body.split())
    if ch != "sms":
        if policy.body_max_words and words > policy.body_max_words:
            too_long.append(f"this body is {words} words (at most {policy.body_max_words})")
        if policy.body_max_chars and len(body) > policy.body_max_chars:
            too_long.append(f"this body is {len(body)} characters (at most {policy.body_max_chars})")
    if too_long:
        add(f"{ch}_too_long", Severity.BLOCK, "; ".join(too_long) + ".")

    actions = _actions(content)
    if policy.max_actions is not None and len(actions) > policy.max_actions:
        add(
            f"{ch}_multiple_actions",
            Severity.BLOCK,
            f"this message carries {len(actions)} actions ({', '.join(actions[:4])}); "
            f"at most {policy.max_actions}.",
        )
    if ch == "push" and not actions:
        add("push_no_action", Severity.WARN, "it has no action_url, so a tap only opens the app.")

    if policy.context_required:
        url = _text(content, "action_url")
        prefixes = tuple(policy.product_url_prefixes)
        if not url:
            add(
                f"{ch}_no_context",
                Severity.BLOCK,
                "this message has no action_url pointing at the place in the product it is about.",
            )
        elif prefixes and not url.startswith(prefixes):
            add(
                f"{ch}_no_context",
                Severity.BLOCK,
                f"action_url {url!r} is outside the product (expected it to start with "
                f"{' or '.join(prefixes)}).",
            )

    if ch == "sms" and body:
        if policy.marketing_terms and (not policy.allowed_purposes or purpose in policy.allowed_purposes):
            hits = _marketing_hits(f"{head} {body}", policy.marketing_terms)
            if hits:
                add(
                    "sms_looks_like_marketing",
                    Severity.BLOCK,
                    f"this {purpose} SMS reads like marketing ({', '.join(hits)}).",
                )
        if policy.body_max_chars and len(body) > policy.body_max_chars:
            add(
                "sms_too_long",
                Severity.BLOCK,
                f"this body is {len(body)} characters (at most {policy.body_max_chars}).",
            )
        elif policy.segment_chars:
            segments, per = _sms_segments(body, policy.segment_chars)
            if segments > 1:
                add(
                    "sms_multipart",
                    Severity.WARN,
                    f"this body is {len(body)} characters and goes out as {segments} SMS of {per}.",
                )
    return out


def message_lint(
    *, channel: str, purpose: str, content: Mapping[str, Any], policy: PolicyView | None = None
) -> list[Violation]:
    """Return the channel-policy violations of one message (or journey send step); `policy` saves the
    read when the caller has the channel's policy already."""
    if not isinstance(content, Mapping):
        return [Violation("content_invalid", Severity.BLOCK, "content must be an object with a body.")]
    if channel not in DEFAULT_POLICIES:
        if channel == "auto":
            # The channel is chosen later (and linted then); all that can be said now is the body.
            if _text(content, "body"):
                return []
            return [
                Violation("content_no_body", Severity.BLOCK, "Every channel needs a body; this has none.")
            ]
        return [Violation("unknown_channel", Severity.BLOCK, f"There is no channel {channel!r}.")]
    return policy_lint(
        policy=policy or channel_policy_view(channel=channel), purpose=purpose, content=content
    )
