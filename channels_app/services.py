"""Writes on message status outside the governor: provider results, receipts, the in-app inbox.

Every status change goes through `orchestrator.history.message_status_move`, which sets the
per-status timestamp and sends `message_status_changed` inside the caller's transaction. Statuses only
move forward (a receipt that arrives late never moves a message backwards); the one exception is an
operator's "retry now".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from orchestrator.authority import authorize
from orchestrator.history import message_status_move
from orchestrator.models import ENGAGEMENT_RANK, Message, MessageStatus, Recipient

from .models import TEMPLATE_FIELDS, MessageTemplate, TemplateVariant
from .selectors import inbox_waiting
from .templating import TemplateInvalid, locale_normalize, template_definition_validate


class ReceiptType:
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    FAILED = "failed"
    SEEN = "seen"

    ALL = (DELIVERED, OPENED, CLICKED, BOUNCED, FAILED, SEEN)


RECEIPT_STATUS = {
    ReceiptType.DELIVERED: MessageStatus.DELIVERED,
    ReceiptType.OPENED: MessageStatus.OPENED,
    ReceiptType.SEEN: MessageStatus.OPENED,
    ReceiptType.CLICKED: MessageStatus.CLICKED,
    ReceiptType.BOUNCED: MessageStatus.FAILED,
    ReceiptType.FAILED: MessageStatus.FAILED,
}


@dataclass(frozen=True)
class ReceiptResult:
    message: Message
    applied: bool
    detail: str


def message_receipt_apply(
    *,
    message_id: int,
    type: str,  # noqa: A002 - the receipt's own word
    occurred_at: datetime | None = None,
    detail: str = "",
    now: datetime | None = None,
) -> ReceiptResult:
    """Apply one delivery/engagement receipt. Raises Message.DoesNotExist or ValueError (bad type).

    Forward moves apply; a late or out-of-order receipt only fills its own timestamp if it is empty.
    A click implies an open and a delivery, so their empty timestamps are filled too.
    """
    if type not in RECEIPT_STATUS:
        raise ValueError(f"Unknown receipt type {type!r}; expected one of {', '.join(ReceiptType.ALL)}.")
    now = now or timezone.now()
    at = occurred_at or now
    target = RECEIPT_STATUS[type]
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=message_id)
        current = message.status
        if target == MessageStatus.FAILED:
            if current in (MessageStatus.SENT, MessageStatus.DELIVERED):
                message.last_error = f"{type} receipt: {detail}".strip().rstrip(":")
                message.next_attempt_at = None
                message_status_move(
                    message=message,
                    status=MessageStatus.FAILED,
                    at=at,
                    update_fields=["last_error", "next_attempt_at"],
                )
                return ReceiptResult(message, True, f"{current} → failed")
            return ReceiptResult(message, False, f"a {type} receipt does not apply to a {current} message")

        if current not in ENGAGEMENT_RANK:
            return ReceiptResult(message, False, f"a {type} receipt does not apply to a {current} message")
        fills = []
        for status in (MessageStatus.DELIVERED, MessageStatus.OPENED, MessageStatus.CLICKED):
            if (
                ENGAGEMENT_RANK[status] <= ENGAGEMENT_RANK[target]
                and getattr(message, f"{status}_at") is None
                and status != target
            ):
                setattr(message, f"{status}_at", at)
                fills.append(f"{status}_at")
        if ENGAGEMENT_RANK[target] > ENGAGEMENT_RANK[current]:
            message_status_move(message=message, status=target, at=at, update_fields=fills)
            return ReceiptResult(message, True, f"{current} → {target}")
        stamp = f"{target}_at"
        if getattr(message, stamp) is None:
            setattr(message, stamp, at)
            fills.append(stamp)
        if fills:
            message.save(update_fields=[*fills, "updated_at"])
        return ReceiptResult(message, False, f"already {current}; a {type} receipt never moves it back")


def inbox_messages_deliver(*, recipient: Recipient, now: datetime | None = None) -> list[Message]:
    """The recipient is here: their queued in-app messages are shown, so they are delivered now.

    Returns the messages delivered by this visit (oldest first); ones past expires_at become expired.
    """
    now = now or timezone.now()
    with transaction.atomic():
        waiting = list(
            inbox_waiting(recipient=recipient).select_for_update(skip_locked=True).order_by("sent_at", "id")
        )
        shown = []
        for message in waiting:
            if message.expires_at is not None and message.expires_at <= now:
                message_status_move(message=message, status=MessageStatus.EXPIRED, at=now)
            else:
                shown.append(message_status_move(message=message, status=MessageStatus.DELIVERED, at=now))
        Recipient.objects.filter(pk=recipient.pk).update(last_seen_at=now)
    return shown


def channel_policies_restore(*, channels: Iterable[str]) -> int:
    """Put the shipped defaults back on these channels' policies (creating missing rows)."""
    from .defaults import DEFAULT_POLICIES
    from .models import ChannelPolicy

    restored = 0
    with transaction.atomic():
        for channel in channels:
            fields = DEFAULT_POLICIES.get(channel)
            if fields is None:
                continue
            blank = {
                f.name: f.get_default()
                for f in ChannelPolicy._meta.concrete_fields
                if f.name not in {"id", "channel", "updated_at"}
            }
            ChannelPolicy.objects.update_or_create(channel=channel, defaults={**blank, **fields})
            restored += 1
    return restored


# ---- templates ----------------------------------------------------------------------------------------

TEMPLATE_KEY_RE = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")


def _template_fields(data: dict) -> dict:
    """Validate a whole template definition (raises TemplateInvalid) and return what to store."""
    errors: dict[str, list[str]] = {}
    key = data.get("key")
    if not isinstance(key, str) or not TEMPLATE_KEY_RE.match(key):
        errors["key"] = ["key is required: letters, digits, - and _ (at most 100)."]
    name = data.get("name", "")
    if not isinstance(name, str) or len(name) > 200 or "\x00" in name:
        errors["name"] = ["name is text of at most 200 characters."]
    channel, purpose = data.get("channel"), data.get("purpose") or ""
    default_locale, locales = data.get("default_locale"), data.get("locales")
    if not isinstance(purpose, str):
        errors["purpose"] = ["purpose is one of the purposes, or blank."]
    try:
        previews = template_definition_validate(
            key=key if isinstance(key, str) else "template",
            channel=channel,
            purpose=purpose if isinstance(purpose, str) else "",
            default_locale=default_locale,
            locales=locales,
        )
    except TemplateInvalid as exc:
        exc.field_errors = {**errors, **exc.field_errors}
        raise TemplateInvalid(exc.problems, exc.field_errors) from None
    if errors:
        raise TemplateInvalid([], errors)
    return {
        "key": key,
        "name": name,
        "channel": channel,
        "purpose": purpose,
        "default_locale": locale_normalize(default_locale),
        "locales": {locale_normalize(tag): dict(content) for tag, content in locales.items()},
        "previews": previews,
    }


def _variants_write(template, locales: dict) -> None:
    template.variants.exclude(locale__in=list(locales)).delete()
    existing = {v.locale: v for v in template.variants.all()}
    for locale, content in locales.items():
        values = {name: content.get(name) or "" for name in TEMPLATE_FIELDS}
        variant = existing.get(locale)
        if variant is None:
            TemplateVariant.objects.create(template=template, locale=locale, **values)
        elif any(getattr(variant, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(variant, k, v)
            variant.save()


def template_create(*, data: dict, now: datetime | None = None, user: Any = None):
    """Create a template with its locale variants, validated whole (TemplateInvalid writes nothing). A
    channel owner writes templates for their own channels only (authority.Denied otherwise)."""
    fields = _template_fields(data)
    authorize(user, "channels_app.add_messagetemplate", MessageTemplate(channel=fields["channel"]))
    with transaction.atomic():
        if MessageTemplate.objects.filter(key=fields["key"]).exists():
            raise TemplateInvalid([], {"key": [f"A template with key {fields['key']!r} already exists."]})
        template = MessageTemplate.objects.create(
            key=fields["key"],
            name=fields["name"],
            channel=fields["channel"],
            purpose=fields["purpose"],
            default_locale=fields["default_locale"],
            created_at=now or timezone.now(),
        )
        _variants_write(template, fields["locales"])
    template.previews = fields["previews"]
    return template


def template_update(*, template, changes: dict, user: Any = None):
    """Change a template (any of name, channel, purpose, default_locale, locales — `locales` replaces
    them all); the whole result is validated again and its revision goes up. The editor must be allowed
    on the template as it is and as it would become (its channel)."""
    authorize(user, "channels_app.change_messagetemplate", template)
    unknown = set(changes) - {"key", "name", "channel", "purpose", "default_locale", "locales"}
    if unknown:
        raise TemplateInvalid([], {str(k)[:40]: ["unknown field."] for k in sorted(map(str, unknown))})
    if "key" in changes and changes["key"] != template.key:
        raise TemplateInvalid([], {"key": ["key cannot be changed (senders name the template by it)."]})
    with transaction.atomic():
        template = MessageTemplate.objects.select_for_update().get(pk=template.pk)
        current = {
            "key": template.key,
            "name": template.name,
            "channel": template.channel,
            "purpose": template.purpose,
            "default_locale": template.default_locale,
            "locales": {
                v.locale: {n: getattr(v, n) for n in TEMPLATE_FIELDS if getattr(v, n)}
                for v in template.variants.all()
            },
        }
        fields = _template_fields({**current, **changes})
        for name in ("name", "channel", "purpose", "default_locale"):
            setattr(template, name, fields[name])
        authorize(user, "channels_app.change_messagetemplate", template)
        template.revision += 1
        template.save()
        _variants_write(template, fields["locales"])
    template.previews = fields["previews"]
    return template
