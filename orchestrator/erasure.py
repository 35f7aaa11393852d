"""The right to erasure: `recipient_erase` removes what identifies a person and keeps the counts.

What goes: contact points (addresses, phone numbers, push tokens), preferences, attributes, time zone and
locale, event properties, message content, addresses and provider ids, free-text reasons naming the
person, consent-record addresses, stored idempotent responses about them, the admin log's name for them,
and (through `recipient_erasing`) what the channels and journeys apps hold. What stays: the recipient row
under an anonymous token (`erased-...`), and every message, decision, event name, enrollment and step
run attached to it, so the governor's history, journey reports and attribution still add up.

One transaction, set-based (one statement per table), with an `Erasure` row whose history is the audit
entry: who erased, when, from where, naming the person only by the token.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import CharField, Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from .audit import audit_source
from .history import messages_erase
from .models import (
    ContactPoint,
    Erasure,
    Event,
    IdempotencyKey,
    Message,
    Preference,
    PreferenceChange,
    Recipient,
)
from .signals import recipient_erase_locking, recipient_erasing

TOKEN_PREFIX = "erased-"
# Identifiers shorter than this are not searched for in free text: "42" would hit every count in a reason.
MIN_IDENTIFIER = 4


class AlreadyErased(Exception):
    """The recipient was erased before (the API answers 404: the person is unknown)."""


def _identifiers(recipient: Recipient) -> list[str]:
    """The strings that name the person: external id and every address seen for them, longest first."""
    found = {recipient.external_id}
    found |= set(ContactPoint.objects.filter(recipient=recipient).values_list("address", flat=True))
    found |= set(PreferenceChange.objects.filter(recipient=recipient).values_list("address", flat=True))
    found |= set(
        Message.objects.filter(recipient=recipient)
        .exclude(to_address="")
        .values_list("to_address", flat=True)
    )
    return sorted((s for s in found if len(s) >= MIN_IDENTIFIER), key=len, reverse=True)


def _is_amount(value: Any) -> bool:
    """A number, or text spelling one (measurement reads "40" as 40)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str) and len(value) <= 40:
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    return False


class Keep:
    """Event properties measurement reads: numbers under value keys (a conversion's amount), and values
    a team wrote in a definition's filter (so not personal) under filter keys."""

    def __init__(self) -> None:
        self.numbers: set[str] = set()
        self.values: dict[str, list] = {}

    def add(self, spec: Mapping[str, Any]) -> None:
        self.numbers |= set(spec.get("numbers") or ())
        for key, values in (spec.get("values") or {}).items():
            self.values.setdefault(key, []).extend(values)

    def properties(self, properties: Any) -> dict:
        if not isinstance(properties, dict):
            return {}
        kept = {}
        for key, value in properties.items():
            number = _is_amount(value)
            if (key in self.numbers and number) or any(
                type(value) is type(v) and value == v for v in self.values.get(key, ())
            ):
                kept[key] = value
        return kept


def _events_erase(*, recipient: Recipient, keep: Keep) -> int:
    events = list(Event.objects.filter(recipient=recipient).only("id", "properties"))
    changed = []
    for event in events:
        properties = keep.properties(event.properties)
        if properties != event.properties:
            event.properties = properties
            changed.append(event)
    Event.objects.bulk_update(changed, ["properties"], batch_size=1000)
    return len(events)


def _ids_as_text(model, recipient: Recipient):
    """The recipient's row ids of `model` as text (a subquery), to match ids inside stored JSON."""
    return model.objects.filter(recipient=recipient).values(text_id=Cast("id", output_field=CharField()))


# The conversation's tables and the column naming the recipient in each: were one of them given a
# django-simple-history table (none is today), its rows about the person would go too.
PERSONAL_MODELS = (
    (Recipient, "id"),
    (ContactPoint, "recipient_id"),
    (Preference, "recipient_id"),
    (PreferenceChange, "recipient_id"),
    (Event, "recipient_id"),
    (Message, "recipient_id"),
)


def _histories_erase(*, recipient_id: int, counts: dict[str, int]) -> None:
    for model, column in PERSONAL_MODELS:
        attribute = getattr(model._meta, "simple_history_manager_attribute", None)
        if attribute:
            history = getattr(model, attribute).model
            deleted = history.objects.filter(**{column: recipient_id}).delete()[0]
            counts[f"history_{model._meta.model_name}"] = deleted


def recipient_erase(*, recipient: Recipient, actor: Any = None, at: datetime, via: str = "") -> Erasure:
    """Erase one recipient's personal data (see the module docstring); `actor` is the user who asked (None:
    the system). Raises AlreadyErased for a recipient erased before."""
    with transaction.atomic():
        # First what batches lock before a recipient (a journey's enrollments, a campaign's members), then
        # the recipient's lock, as the governor takes it: no decision interleaves with the erasure.
        recipient_erase_locking.send(sender=Recipient, recipient_id=recipient.pk)
        recipient = Recipient.objects.select_for_update().get(pk=recipient.pk)
        if recipient.erased_at is not None:
            raise AlreadyErased(recipient.external_id)
        token = TOKEN_PREFIX + secrets.token_hex(12)
        identifiers = _identifiers(recipient)
        counts: dict[str, int] = {}
        responses = recipient_erasing.send(
            sender=Recipient, recipient=recipient, identifiers=identifiers, at=at, counts=counts
        )
        counts |= messages_erase(recipient_id=recipient.pk, identifiers=identifiers, at=at)
        # Stored first responses that describe the person: an event's or a recorded send's (which name the
        # recipient), a send's (by message id).
        stored = IdempotencyKey.objects.annotate(body_id=KeyTextTransform("id", "response_body"))
        counts["idempotency_keys"] = stored.filter(
            Q(response_body__recipient=recipient.external_id)
            | Q(scope__startswith="messages", body_id__in=_ids_as_text(Message, recipient))
            | Q(scope__startswith="events", body_id__in=_ids_as_text(Event, recipient))
        ).delete()[0]
        keep = Keep()
        for _receiver, response in responses:
            keep.add((response or {}).get("keep_event_properties") or {})
        counts["events"] = _events_erase(recipient=recipient, keep=keep)
        # The admin's log names objects by str(): the recipient's is its external id, a contact point's its
        # address, and a change message names the inlines changed.
        points = ContactPoint.objects.filter(recipient=recipient)
        logged = Q(content_type=ContentType.objects.get_for_model(Recipient), object_id=str(recipient.pk))
        logged |= Q(
            content_type=ContentType.objects.get_for_model(ContactPoint),
            object_id__in=[str(pk) for pk in points.values_list("pk", flat=True)],
        )
        counts["admin_log"] = LogEntry.objects.filter(logged).update(object_repr=token, change_message="")
        counts["contact_points"] = points.delete()[0]
        counts["preferences"] = Preference.objects.filter(recipient=recipient).delete()[0]
        counts["preference_changes"] = PreferenceChange.objects.filter(recipient=recipient).update(
            address="", detail=""
        )
        _histories_erase(recipient_id=recipient.pk, counts=counts)
        Recipient.objects.filter(pk=recipient.pk).update(
            external_id=token,
            timezone="UTC",
            locale="",
            attributes={},
            last_seen_at=None,
            erased_at=at,
            updated_at=at,
        )
        recipient.refresh_from_db()
        erasure = Erasure(
            token=token,
            recipient=recipient,
            erased_at=at,
            erased_by=actor if getattr(actor, "pk", None) else None,
            via=(via or audit_source())[:120],
            counts=counts,
        )
        if erasure.erased_by is not None:
            erasure._history_user = actor
        erasure.save()
    return erasure
