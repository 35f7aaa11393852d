"""Writes on the conversation: recipients, contact points, preferences, events, idempotent requests.

Each function is one action in one transaction; validation happens before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import limits
from .consent import preference_changes_record
from .models import (
    ChangeSource,
    Channel,
    ContactPoint,
    Event,
    IdempotencyKey,
    Preference,
    Purpose,
    Recipient,
    Scope,
    Segment,
    ServiceToken,
    validate_timezone,
)
from .segments import SegmentInvalid, segment_definition_validate
from .signals import event_ingested, recipient_changed


def phone_normalize(value: str) -> str:
    """Return the E.164 form of a phone number, or raise ValidationError with a plain reason."""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(
            f"{value!r} is not a phone number in E.164 form (e.g. +14155550123).", code="invalid_phone"
        ) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(f"{value!r} is not a valid phone number.", code="invalid_phone")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def email_normalize(value: str) -> str:
    value = (value or "").strip()
    try:
        validate_email(value)
    except ValidationError as exc:
        raise ValidationError(f"{value!r} is not a valid email address.", code="invalid_email") from exc
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


@dataclass(frozen=True)
class UpsertResult:
    recipient: Recipient
    created: bool
    changed: bool


def _desired_contact_points(
    *, email: str | None, phone: str | None, push_tokens: Iterable[str] | None, in_app: bool | None
) -> dict[str, set[str] | None]:
    """Validate the contact fields given; None for a channel means 'leave as it is'."""
    errors: dict[str, list[str]] = {}
    desired: dict[str, set[str] | None] = {c: None for c in Channel.values}
    if email is not None:
        try:
            desired[Channel.EMAIL] = {email_normalize(email)} if email else set()
        except ValidationError as exc:
            errors["email"] = exc.messages
    if phone is not None:
        try:
            desired[Channel.SMS] = {phone_normalize(phone)} if phone else set()
        except ValidationError as exc:
            errors["phone"] = exc.messages
    if push_tokens is not None:
        tokens = [t.strip() for t in push_tokens]
        if any(not t or len(t) > 512 for t in tokens):
            errors["push_tokens"] = ["Each push token must be a non-empty string of at most 512 characters."]
        elif len(set(tokens)) > limits.MAX_PUSH_TOKENS:
            errors["push_tokens"] = [f"At most {limits.MAX_PUSH_TOKENS} push tokens per recipient."]
        desired[Channel.PUSH] = set(tokens)
    if in_app is not None:
        desired[Channel.IN_APP] = {""} if in_app else set()
    if errors:
        raise ValidationError(errors)
    return desired


def _contact_points_apply(*, recipient: Recipient, desired: Mapping[str, set[str] | None]) -> bool:
    changed = False
    existing: dict[str, dict[str, ContactPoint]] = {}
    for cp in recipient.contact_points.all():
        existing.setdefault(cp.channel, {})[cp.address] = cp
    for channel, addresses in desired.items():
        if addresses is None:
            continue
        have = existing.get(channel, {})
        stale = [cp.pk for addr, cp in have.items() if addr not in addresses]
        if stale:
            ContactPoint.objects.filter(pk__in=stale).delete()
            changed = True
        new = [ContactPoint(recipient=recipient, channel=channel, address=a) for a in addresses - set(have)]
        if new:
            ContactPoint.objects.bulk_create(new)
            changed = True
    return changed


def _preferences_validate(preferences: Any) -> list[tuple[str, str, bool]]:
    if not isinstance(preferences, Mapping):
        raise ValidationError({"preferences": ["Expected {channel: {purpose: true|false}}."]})
    rows, errors = [], []
    for channel, purposes in preferences.items():
        if channel not in Channel.values:
            errors.append(f"Unknown channel {channel!r}; expected one of {', '.join(Channel.values)}.")
            continue
        if not isinstance(purposes, Mapping):
            errors.append(f"preferences.{channel} must map purposes to true (opted in) or false (opted out).")
            continue
        for purpose, allowed in purposes.items():
            if purpose not in Purpose.values:
                errors.append(f"Unknown purpose {purpose!r}; expected one of {', '.join(Purpose.values)}.")
            elif not isinstance(allowed, bool):
                errors.append(f"preferences.{channel}.{purpose} must be true or false.")
            else:
                rows.append((channel, purpose, allowed))
    if errors:
        raise ValidationError({"preferences": errors})
    return rows


def _preferences_apply(
    *, recipient: Recipient, rows: list[tuple[str, str, bool]], source: str, at: datetime
) -> bool:
    """Write the preference rows that differ and record each change with its source."""
    changed, wrote = [], False
    current = {(p.channel, p.purpose): p for p in recipient.preferences.all()}
    for channel, purpose, allowed in rows:
        pref = current.get((channel, purpose))
        if pref is None:
            Preference.objects.create(recipient=recipient, channel=channel, purpose=purpose, opted_in=allowed)
            wrote = True
            if not allowed:  # no row meant opted in: only an opt-out changes the recipient's word
                changed.append((channel, purpose, allowed))
        elif pref.opted_in != allowed:
            pref.opted_in = allowed
            pref.save(update_fields=["opted_in", "updated_at"])
            changed.append((channel, purpose, allowed))
    if changed:
        preference_changes_record(recipient=recipient, rows=changed, source=source, at=at)
    return wrote or bool(changed)


def recipient_upsert(
    *,
    external_id: str,
    timezone_name: str | None = None,
    locale: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    email: str | None = None,
    phone: str | None = None,
    push_tokens: Iterable[str] | None = None,
    in_app: bool | None = None,
    preferences: Mapping[str, Any] | None = None,
    create: bool = True,
    source: str = ChangeSource.API,
) -> UpsertResult:
    """Create or update a recipient by external id. Fields left as None keep their value; repeating the
    same upsert changes nothing. Raises ValidationError (by field) before writing anything."""
    errors: dict[str, list[str]] = {}
    external_id = (external_id or "").strip()
    if create:
        try:
            limits.external_id_check(external_id)
        except limits.LimitError as exc:
            errors["external_id"] = [str(exc)]
    elif not external_id:
        errors["external_id"] = ["external_id is required."]
    if locale is not None and len(locale) > 35:
        errors["locale"] = ["locale is at most 35 characters (a BCP 47 tag such as pt-BR)."]
    if timezone_name is not None:
        try:
            validate_timezone(timezone_name)
        except ValidationError as exc:
            errors["timezone"] = exc.messages
    if attributes is not None:
        try:
            limits.json_object_check(attributes, what="attributes")
        except limits.LimitError as exc:
            errors["attributes"] = [str(exc)]
    desired, pref_rows = {}, []
    try:
        desired = _desired_contact_points(email=email, phone=phone, push_tokens=push_tokens, in_app=in_app)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if preferences is not None:
        try:
            pref_rows = _preferences_validate(preferences)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)

    with transaction.atomic():
        recipient = Recipient.objects.select_for_update().filter(external_id=external_id).first()
        created = recipient is None
        if created:
            if not create:
                raise Recipient.DoesNotExist(external_id)
            try:
                with transaction.atomic():
                    recipient = Recipient.objects.create(
                        external_id=external_id,
                        timezone=timezone_name or "UTC",
                        locale=locale or "",
                        attributes=dict(attributes or {}),
                    )
            except IntegrityError:
                # A concurrent upsert created it first: update that one instead.
                recipient = Recipient.objects.select_for_update().get(external_id=external_id)
                created = False
        if recipient.erased_at is not None:
            # The anonymous row of an erased person (orchestrator.erasure) takes nothing personal again.
            raise ValidationError({"external_id": ["This id names an erased recipient; use another."]})
        changed = created
        if not created:
            updates = {}
            if timezone_name is not None and recipient.timezone != timezone_name:
                updates["timezone"] = timezone_name
            if locale is not None and recipient.locale != locale:
                updates["locale"] = locale
            if attributes is not None and recipient.attributes != dict(attributes):
                updates["attributes"] = dict(attributes)
            if updates:
                for field, value in updates.items():
                    setattr(recipient, field, value)
                recipient.save(update_fields=[*updates, "updated_at"])
                changed = True
        changed |= _contact_points_apply(recipient=recipient, desired=desired)
        changed |= _preferences_apply(recipient=recipient, rows=pref_rows, source=source, at=timezone.now())
        if changed:
            recipient_changed.send(sender=Recipient, recipient=recipient, created=created)
    return UpsertResult(recipient=recipient, created=created, changed=changed)


def event_ingest(
    *,
    recipient: Recipient,
    name: str,
    properties: Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> Event:
    """Record a product event and let journeys and channels react (in the same transaction)."""
    now = timezone.now()
    name = (name or "").strip()
    errors = {}
    if not name:
        errors["name"] = ["name is required."]
    elif len(name) > Event._meta.get_field("name").max_length:
        errors["name"] = [f"name is at most {Event._meta.get_field('name').max_length} characters."]
    if properties is not None:
        try:
            limits.json_object_check(properties, what="properties")
        except limits.LimitError as exc:
            errors["properties"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        event = Event.objects.create(
            recipient=recipient,
            name=name,
            properties=dict(properties or {}),
            occurred_at=occurred_at or now,
            received_at=now,
        )
        event_ingested.send(sender=Event, event=event)
    return event


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def idempotent_call(
    *, scope: str, key: str | None, body: Any, action: Callable[[], tuple[int, Any]]
) -> tuple[int, Any, bool]:
    """Run `action` once per (scope, key) within the TTL and return (status, body, replayed).

    The key row is inserted first in the same transaction as the action: a concurrent repeat blocks on
    the unique index until the first commits, then replays its stored response. A failed action rolls
    back the key too, so a corrected retry with the same key is allowed. Without a key it just runs.
    """
    if not key:
        with transaction.atomic():
            status, payload = action()
        return status, payload, False
    digest = request_hash(body)
    ttl = settings.ORCHESTRATOR["IDEMPOTENCY_TTL"]
    now = timezone.now()
    with transaction.atomic():
        IdempotencyKey.objects.filter(scope=scope, key=key, created_at__lt=now - ttl).delete()
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(
                    scope=scope, key=key, request_hash=digest, created_at=now
                )
        except IntegrityError:
            record = None
        if record is None:
            stored = IdempotencyKey.objects.get(scope=scope, key=key)
            if stored.request_hash != digest:
                raise IdempotencyConflict(key)
            return stored.response_status, stored.response_body, True
        status, payload = action()
        if status >= 400:
            # Nothing was done; do not pin the key to a failure (the rollback happens via the caller).
            transaction.set_rollback(True)
            return status, payload, False
        record.response_status, record.response_body = status, payload
        record.save(update_fields=["response_status", "response_body"])
    return status, payload, False


def _segment_fields_validate(*, name: Any, description: Any, match: Any, conditions: Any) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or "\x00" in name:
        errors["name"] = ["name is required: at most 200 characters."]
    if not isinstance(description, str) or len(description) > 2000 or "\x00" in description:
        errors["description"] = ["description is text of at most 2000 characters."]
    try:
        segment_definition_validate(match=match, conditions=conditions)
    except SegmentInvalid as exc:
        errors.update(exc.errors)
    if errors:
        raise SegmentInvalid(errors)
    return {"name": name.strip(), "description": description, "match": match, "conditions": list(conditions)}


def segment_create(*, name: Any, conditions: Any, match: Any = "all", description: Any = "") -> Segment:
    """Create a segment; SegmentInvalid (by field) writes nothing."""
    fields = _segment_fields_validate(name=name, description=description, match=match, conditions=conditions)
    with transaction.atomic():
        if Segment.objects.filter(name=fields["name"]).exists():
            raise SegmentInvalid({"name": [f"A segment named {fields['name']!r} already exists."]})
        try:
            with transaction.atomic():
                return Segment.objects.create(**fields)
        except IntegrityError as exc:  # a concurrent create of the same name
            raise SegmentInvalid({"name": [f"A segment named {fields['name']!r} already exists."]}) from exc


def segment_update(*, segment: Segment, changes: Mapping[str, Any]) -> Segment:
    """Change a segment's name, description, match or conditions (validated together)."""
    unknown = set(changes) - {"name", "description", "match", "conditions"}
    if unknown:
        raise SegmentInvalid({key: ["unknown field."] for key in sorted(map(str, unknown))})
    current = {
        "name": segment.name,
        "description": segment.description,
        "match": segment.match,
        "conditions": segment.conditions,
    }
    fields = _segment_fields_validate(**{**current, **changes})
    with transaction.atomic():
        segment = Segment.objects.select_for_update().get(pk=segment.pk)
        if Segment.objects.filter(name=fields["name"]).exclude(pk=segment.pk).exists():
            raise SegmentInvalid({"name": [f"A segment named {fields['name']!r} already exists."]})
        for key, value in fields.items():
            setattr(segment, key, value)
        try:
            with transaction.atomic():
                segment.save()
        except IntegrityError as exc:
            raise SegmentInvalid({"name": [f"A segment named {fields['name']!r} already exists."]}) from exc
    return segment


# ---- service tokens -----------------------------------------------------------------------------


def service_token_create(
    *, name: str, scopes: list[str], user=None, by=None, at: datetime | None = None
) -> tuple[ServiceToken, str]:
    """Issue a scoped token; without an account, a service account `svc-<name>` in the Service role is
    made for it. Returns the token and its key, which exists in clear only now."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from .authority import SERVICE

    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise ValidationError({"scopes": [f"Unknown scope(s): {', '.join(unknown)}."]})
    with transaction.atomic():
        if user is None:
            user_model = get_user_model()
            user, created = user_model.objects.get_or_create(username=f"svc-{name}"[:150])
            if created:
                user.set_unusable_password()
                user.save()
                user.groups.add(*Group.objects.filter(name=SERVICE))
        token = ServiceToken(name=name, user=user, scopes=sorted(set(scopes)), created_by=by)
        token.created_at = at or timezone.now()
        raw = token.key_issue()
        token.save()
    return token, raw


def service_tokens_revoke(*, tokens, at: datetime | None = None) -> int:
    """Revoke tokens (they stop authenticating at once); the rows stay for the audit."""
    count = 0
    with transaction.atomic():
        for token in tokens:
            if token.revoked_at is None:
                token.revoked_at = at or timezone.now()
                token.save(update_fields=["revoked_at"])
                count += 1
    return count
