"""ESP tracking events from django-anymail (its normalised events and `tracking` signal) mapped into
receipts, bounces and complaints, so any ESP anymail supports works by settings alone.

delivered / opened / clicked → the message's receipts; bounced → a hard bounce: the message failed and
the address is undeliverable; deferred → a soft bounce, counted (suppressed after SOFT_BOUNCE_LIMIT in a
row); rejected with reason bounced/invalid → undeliverable; complained → a spam complaint: undeliverable
and recorded; unsubscribed (the ESP's own list-unsubscribe) → opted out of that purpose on email.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.utils import timezone

from orchestrator.consent import (
    OPTIONAL_PURPOSES,
    contact_point_delivered,
    contact_point_soft_bounce,
    contact_point_suppress,
    preferences_set,
)
from orchestrator.models import ChangeKind, ChangeSource, Channel, Message, Recipient

from .services import ReceiptType, message_receipt_apply

logger = logging.getLogger(__name__)

RECEIPTS = {"delivered": ReceiptType.DELIVERED, "opened": ReceiptType.OPENED, "clicked": ReceiptType.CLICKED}
DEAD_REJECTS = {"bounced", "invalid"}


def _message_for(event) -> Message | None:
    """Our message for the event: its metadata (we send orchestrator_message_id), else the ESP's id."""
    metadata = getattr(event, "metadata", None) or {}
    ref = metadata.get("orchestrator_message_id") if isinstance(metadata, dict) else None
    if ref is not None and str(ref).isdigit():
        found = Message.objects.filter(pk=int(ref), channel=Channel.EMAIL).first()
        if found is not None:
            return found
    if event.message_id:
        return Message.objects.filter(provider_message_id=str(event.message_id)).order_by("-id").first()
    return None


def anymail_event_apply(*, event, esp_name: str, now: datetime | None = None) -> str:
    """Apply one anymail tracking event; returns what was done (for logs and tests)."""
    now = now or timezone.now()
    at = event.timestamp or now
    kind = event.event_type
    message = _message_for(event)
    address = (event.recipient or "").strip()
    recipient_id = message.recipient_id if message else None
    detail = " ".join(str(x) for x in (event.description, event.mta_response) if x)[:400]
    where = f"{esp_name} {kind}" + (f": {detail}" if detail else "")

    def suppress(change: str, reason: str) -> None:
        if address:
            contact_point_suppress(
                channel=Channel.EMAIL,
                address=address,
                kind=change,
                reason=reason,
                at=at,
                recipient_id=recipient_id,
                message_id=message.pk if message else None,
            )

    if kind in RECEIPTS and message is not None:
        if kind == "delivered" and address:
            contact_point_delivered(channel=Channel.EMAIL, address=address)
        return message_receipt_apply(
            message_id=message.pk, type=RECEIPTS[kind], occurred_at=at, detail=where
        ).detail
    if kind == "bounced" or (kind == "rejected" and event.reject_reason in DEAD_REJECTS):
        if message is not None:
            message_receipt_apply(
                message_id=message.pk, type=ReceiptType.BOUNCED, occurred_at=at, detail=where
            )
        suppress(ChangeKind.HARD_BOUNCE, f"hard bounce ({where})")
        return "hard bounce: address suppressed"
    if kind == "deferred" and address:
        count = contact_point_soft_bounce(
            channel=Channel.EMAIL,
            address=address,
            reason=where,
            at=at,
            recipient_id=recipient_id,
            message_id=message.pk if message else None,
        )
        return f"soft bounce {count}"
    if kind == "complained" and address:
        suppress(ChangeKind.COMPLAINT, f"spam complaint ({esp_name})")
        return "complaint: address suppressed"
    if kind == "unsubscribed" and message is not None:
        purposes = [message.purpose] if message.purpose in OPTIONAL_PURPOSES else None
        preferences_set(
            recipient=message.recipient,
            channel=Channel.EMAIL,
            purposes=purposes,
            opted_in=False,
            source=ChangeSource.PROVIDER,
            at=at,
            message_id=message.pk,
            detail=f"unsubscribed at {esp_name}",
        )
        return "unsubscribed"
    if kind == "failed" and message is not None:
        return message_receipt_apply(
            message_id=message.pk, type=ReceiptType.FAILED, occurred_at=at, detail=where
        ).detail
    return "ignored"


def anymail_inbound_apply(*, event, esp_name: str, now: datetime | None = None) -> str:
    """The `mailto:` of List-Unsubscribe arriving through the ESP's inbound webhook: a subject
    "unsubscribe <token>" opts out exactly like the one-click link. Anything else is not ours."""
    from orchestrator.preferences import LinkExpired, LinkInvalid, preference_token_read

    subject = str(getattr(event.message, "subject", "") or "").strip()
    word, _, token = subject.partition(" ")
    if word.lower() != "unsubscribe" or not token:
        return "ignored"
    try:
        claims = preference_token_read(token.strip())
    except (LinkExpired, LinkInvalid):
        return "ignored: invalid link"
    message = Message.objects.filter(pk=claims.message_id, recipient_id=claims.recipient_id).first()
    recipient = message.recipient if message else Recipient.objects.filter(pk=claims.recipient_id).first()
    if recipient is None:
        return "ignored: no such recipient"
    preferences_set(
        recipient=recipient,
        channel=claims.channel or Channel.EMAIL,
        purposes=[claims.purpose] if claims.purpose in OPTIONAL_PURPOSES else None,
        opted_in=False,
        source=ChangeSource.LINK,
        at=now or timezone.now(),
        message_id=message.pk if message else None,
        detail=f"List-Unsubscribe mailto via {esp_name}",
    )
    return "unsubscribed"
