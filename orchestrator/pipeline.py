"""The send pipeline: every message, whatever its source, goes through here (DESIGN.md).

validate (recipient reachable on the channel, the named contact point exists) → choose the channel (for
`auto`) → lint against the channel's job (blocking violations refuse; warnings are kept on the message)
→ the channel's default shelf life when no expires_at is given → the governor decides and records the
Message in one short locked transaction → delivery is enqueued on commit.

This module sits above governor and channels_app (it imports both); journeys call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from channels_app.delivery import message_deliver_enqueue
from channels_app.limits import message_input_problems
from channels_app.lint import Severity, message_lint
from channels_app.selectors import channel_default_ttl
from governor.services import message_decide

from .channel_choice import channel_choose
from .models import AUTO_CHANNEL, Channel, ContactPoint, Message, MessageStatus, Purpose, Recipient, Source


class SendRefused(Exception):
    """The message was refused before the governor: nothing was written.

    `errors` maps a field to a list of {code, detail} (the API turns this into a 400).
    """

    def __init__(self, errors: Mapping[str, list[dict[str, str]]]):
        super().__init__("; ".join(e["detail"] for errs in errors.values() for e in errs))
        self.errors = dict(errors)


def _refuse(field: str, code: str, detail: str) -> SendRefused:
    return SendRefused({field: [{"code": code, "detail": detail}]})


def recipient_reachable_channels(*, recipient: Recipient) -> set[str]:
    """Channels on which the recipient has an opted-in contact point."""
    return set(
        ContactPoint.objects.filter(recipient=recipient, opted_in=True).values_list("channel", flat=True)
    )


def message_send(
    *,
    recipient: Recipient,
    channel: str,
    purpose: str,
    content: Mapping[str, Any],
    priority: int = 50,
    expires_at: datetime | None = None,
    deliver_after: datetime | None = None,
    source: str = Source.API,
    source_ref: str = "",
    to: str | None = None,
    avoid_channels: frozenset[str] = frozenset(),
    at: datetime | None = None,
) -> Message:
    """Run one message through the pipeline and return the recorded Message (any decision).

    Raises SendRefused (nothing written) for input the pipeline will not accept.
    """
    at = at or timezone.now()
    if channel not in (*Channel.values, AUTO_CHANNEL):
        raise _refuse("channel", "invalid_channel", f"Unknown channel {channel!r}.")
    if purpose not in Purpose.values:
        raise _refuse("purpose", "invalid_purpose", f"Unknown purpose {purpose!r}.")
    if not 0 <= int(priority) <= 100:
        raise _refuse("priority", "invalid_priority", "priority must be between 0 and 100.")
    if expires_at is not None and expires_at <= at:
        raise _refuse("expires_at", "already_expired", "expires_at is already in the past.")
    problems = message_input_problems(
        channel=channel, content=content, deliver_after=deliver_after, expires_at=expires_at, at=at
    )
    if problems:
        errors: dict[str, list[dict[str, str]]] = {}
        for p in problems:
            errors.setdefault(p.field, []).append({"code": p.code, "detail": p.detail})
        raise SendRefused(errors)

    reachable = recipient_reachable_channels(recipient=recipient)
    channel_reason = ""
    requested = channel
    if channel == AUTO_CHANNEL:
        choice = channel_choose(
            recipient=recipient,
            purpose=purpose,
            content=content,
            reachable=reachable,
            avoid=avoid_channels,
            at=at,
        )
        if choice is None:
            raise _refuse(
                "channel",
                "no_channel",
                f"No channel can carry this {purpose} message to {recipient.external_id}.",
            )
        channel, channel_reason = choice.channel, choice.reason
    elif channel not in reachable:
        raise _refuse(
            "channel",
            "unreachable",
            f"{recipient.external_id} has no opted-in {Channel(channel).label} contact point.",
        )

    if to is not None:
        if requested == AUTO_CHANNEL:
            raise _refuse("to", "to_needs_channel", "`to` names a contact point, so name its channel too.")
        if not ContactPoint.objects.filter(
            recipient=recipient, channel=channel, address=to, opted_in=True
        ).exists():
            raise _refuse(
                "to",
                "unknown_contact_point",
                f"{recipient.external_id} has no opted-in {Channel(channel).label} contact point {to!r}.",
            )

    violations = message_lint(channel=channel, purpose=purpose, content=content)
    blocking = [v for v in violations if v.severity == Severity.BLOCK]
    if blocking:
        raise SendRefused({"content": [{"code": v.code, "detail": v.reason} for v in blocking]})
    warnings = [{"code": v.code, "detail": v.reason} for v in violations]

    if expires_at is None:
        # Each channel's own shelf life (push expires fast), counted from when it may first go out.
        ttl = channel_default_ttl(channel=channel)
        if ttl is not None:
            expires_at = max(at, deliver_after or at) + ttl

    message = message_decide(
        recipient=recipient,
        channel=channel,
        purpose=purpose,
        content=dict(content),
        priority=int(priority),
        expires_at=expires_at,
        deliver_after=deliver_after,
        source=source,
        source_ref=source_ref,
        requested_channel=requested,
        channel_reason=channel_reason,
        warnings=warnings,
        to_address=to or "",
        at=at,
    )
    if message.status == MessageStatus.ACCEPTED:
        # robust: if the broker is down the message is still recorded; the sweeper delivers it later.
        transaction.on_commit(lambda: message_deliver_enqueue(message_id=message.pk), robust=True)
    return message
