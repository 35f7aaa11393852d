"""Consent and reachability writes: opt-outs and opt-ins, suppression of dead addresses, and the record.

Every change lands in `PreferenceChange` with its source (the recipient's link, the API, the admin, a
provider), in the same transaction as the change itself, so the record and the state never disagree.
The burn monitor (`consent_burn_weekly`) reads that record next to the history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.db.models.functions import TruncDate

from .models import (
    BURN_KINDS,
    CLEARED_STATUSES,
    ChangeKind,
    ChangeSource,
    Channel,
    ContactPoint,
    Message,
    Preference,
    PreferenceChange,
    Purpose,
    Recipient,
)

# Purposes a recipient may turn off. Transactional messages (receipts, confirmations they asked for)
# always go: turning a channel off turns off everything else on it.
OPTIONAL_PURPOSES = (Purpose.ALERT, Purpose.ENGAGEMENT, Purpose.PROMOTIONAL)


def consent_conf(name: str):
    return settings.CONSENT[name]


class ConsentError(ValueError):
    """Bad consent input: `field` and a plain reason (→ 400, nothing written)."""

    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field, self.detail = field, detail


def preferences_set(
    *,
    recipient: Recipient,
    channel: str,
    purposes: Iterable[str] | None,
    opted_in: bool,
    source: str,
    at: datetime,
    message_id: int | None = None,
    detail: str = "",
) -> bool:
    """Opt the recipient out of (or back into) `purposes` on `channel`; None means the whole channel
    (every optional purpose). Records one PreferenceChange when anything changed; returns whether it did."""
    if channel not in Channel.values:
        raise ConsentError("channel", f"Unknown channel {channel!r}.")
    whole = purposes is None
    wanted = list(OPTIONAL_PURPOSES) if whole else list(purposes)
    for purpose in wanted:
        if purpose not in OPTIONAL_PURPOSES:
            raise ConsentError("purpose", f"{purpose!r} is not a purpose a recipient can turn off.")
    if source not in ChangeSource.values:
        raise ConsentError("source", f"Unknown source {source!r}.")
    with transaction.atomic():
        current = {
            p.purpose: p
            for p in Preference.objects.select_for_update().filter(
                recipient=recipient, channel=channel, purpose__in=wanted
            )
        }
        changed = []
        for purpose in wanted:
            pref = current.get(purpose)
            if pref is None:
                if opted_in:
                    continue  # no row means opted in already
                Preference.objects.create(
                    recipient=recipient, channel=channel, purpose=purpose, opted_in=False
                )
                changed.append(purpose)
            elif pref.opted_in != opted_in:
                pref.opted_in = opted_in
                pref.save(update_fields=["opted_in", "updated_at"])
                changed.append(purpose)
        if not changed:
            return False
        PreferenceChange.objects.create(
            recipient=recipient,
            channel=channel,
            purpose="" if whole or len(changed) > 1 else changed[0],
            kind=ChangeKind.RESUBSCRIBE if opted_in else ChangeKind.UNSUBSCRIBE,
            opted_in=opted_in,
            source=source,
            detail=detail[:500] or ("" if not whole else f"whole channel: {', '.join(changed)}"),
            message_id=message_id,
            created_at=at,
        )
    return True


def preference_changes_record(
    *, recipient: Recipient, rows: Iterable[tuple[str, str, bool]], source: str, at: datetime
) -> None:
    """Record preference rows already written by another service (the API's PATCH, the admin's form)."""
    PreferenceChange.objects.bulk_create(
        [
            PreferenceChange(
                recipient=recipient,
                channel=channel,
                purpose=purpose,
                kind=ChangeKind.RESUBSCRIBE if allowed else ChangeKind.UNSUBSCRIBE,
                opted_in=allowed,
                source=source,
                created_at=at,
            )
            for channel, purpose, allowed in rows
        ]
    )


def _latest_message_to(recipient_id: int, channel: str) -> int | None:
    """The last message that went out to the recipient on the channel: what an opt-out answers."""
    return (
        Message.objects.filter(recipient_id=recipient_id, channel=channel, status__in=list(CLEARED_STATUSES))
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )


def contact_points_opt(
    *, channel: str, address: str, opted_in: bool, source: str, kind: str, at: datetime, detail: str = ""
) -> list[ContactPoint]:
    """Opt every contact point with this address in or out (an SMS STOP/START names a number, which may
    belong to several recipients). Returns the contact points that changed."""
    with transaction.atomic():
        points = list(
            ContactPoint.objects.select_for_update()
            .filter(channel=channel, address=address)
            .exclude(opted_in=opted_in)
            .order_by("pk")
        )
        for cp in points:
            cp.opted_in = opted_in
            cp.save(update_fields=["opted_in", "updated_at"])
        _points_record(
            points,
            kind=kind,
            opted_in=opted_in,
            source=source,
            detail=detail,
            at=at,
            message_of=lambda cp: None if opted_in else _latest_message_to(cp.recipient_id, channel),
        )
    return points


def _points_record(
    points: list[ContactPoint],
    *,
    kind: str,
    opted_in: bool,
    source: str,
    detail: str,
    at: datetime,
    message_of: Callable[[ContactPoint], int | None],
) -> None:
    """One PreferenceChange per contact point that changed (in the caller's transaction)."""
    PreferenceChange.objects.bulk_create(
        [
            PreferenceChange(
                recipient_id=cp.recipient_id,
                channel=cp.channel,
                address=cp.address,
                kind=kind,
                opted_in=opted_in,
                source=source,
                detail=detail[:500],
                message_id=message_of(cp),
                created_at=at,
            )
            for cp in points
        ]
    )


def _points(channel: str, address: str, recipient_id: int | None):
    qs = ContactPoint.objects.select_for_update().filter(channel=channel, address=address)
    return qs.filter(recipient_id=recipient_id) if recipient_id is not None and not address else qs


def contact_point_suppress(
    *,
    channel: str,
    address: str,
    kind: str,
    reason: str,
    at: datetime,
    recipient_id: int | None = None,
    message_id: int | None = None,
) -> int:
    """Mark the address undeliverable (hard bounce, complaint, invalid push token) with the reason and
    time, for every recipient holding it. Already-suppressed points keep their first reason. Returns how
    many contact points were newly suppressed."""
    with transaction.atomic():
        points = [cp for cp in _points(channel, address, recipient_id) if cp.undeliverable_at is None]
        for cp in points:
            cp.undeliverable_at, cp.undeliverable_reason = at, reason[:500]
            cp.save(update_fields=["undeliverable_at", "undeliverable_reason", "updated_at"])
        _points_record(
            points,
            kind=kind,
            opted_in=False,
            source=ChangeSource.PROVIDER,
            detail=reason,
            at=at,
            message_of=lambda cp: message_id,
        )
    return len(points)


def contact_point_soft_bounce(
    *,
    channel: str,
    address: str,
    reason: str,
    at: datetime,
    recipient_id: int | None = None,
    message_id: int | None = None,
) -> int:
    """Count a soft bounce; at CONSENT['SOFT_BOUNCE_LIMIT'] in a row the address is suppressed.
    Returns the count after this one (the highest among the address's holders)."""
    limit = consent_conf("SOFT_BOUNCE_LIMIT")
    with transaction.atomic():
        points = list(_points(channel, address, recipient_id))
        ContactPoint.objects.filter(pk__in=[cp.pk for cp in points]).update(
            soft_bounces=F("soft_bounces") + 1, updated_at=at
        )
        count = max((cp.soft_bounces + 1 for cp in points), default=0)
        if count >= limit:
            contact_point_suppress(
                channel=channel,
                address=address,
                kind=ChangeKind.SOFT_BOUNCES,
                reason=f"{count} soft bounces in a row; last: {reason}",
                at=at,
                recipient_id=recipient_id,
                message_id=message_id,
            )
    return count


def contact_point_delivered(*, channel: str, address: str) -> None:
    """A delivery went through: the soft bounces in a row start again from zero."""
    ContactPoint.objects.filter(channel=channel, address=address, soft_bounces__gt=0).update(soft_bounces=0)


def contact_point_clear(*, contact_point: ContactPoint, by: str, at: datetime) -> bool:
    """An operator clears a suppression: the address is deliverable again. Returns whether it was set."""
    with transaction.atomic():
        cp = ContactPoint.objects.select_for_update().get(pk=contact_point.pk)
        if cp.undeliverable_at is None and not cp.soft_bounces:
            return False
        was = cp.undeliverable_reason
        cp.undeliverable_at, cp.undeliverable_reason, cp.soft_bounces = None, "", 0
        cp.save(update_fields=["undeliverable_at", "undeliverable_reason", "soft_bounces", "updated_at"])
        PreferenceChange.objects.create(
            recipient_id=cp.recipient_id,
            channel=cp.channel,
            address=cp.address,
            kind=ChangeKind.CLEARED,
            opted_in=cp.opted_in,
            source=ChangeSource.ADMIN,
            detail=f"cleared by {by or 'an operator'}; was: {was}"[:500],
            created_at=at,
        )
    return True


# --- reads: the permission-burn monitor ---------------------------------------------------------------


@dataclass(frozen=True)
class BurnRow:
    week: datetime
    channel: str
    purpose: str
    source: str
    kind: str
    count: int


def _week_start(at: datetime) -> datetime:
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def consent_burn_weekly(*, since: datetime, until: datetime) -> dict:
    """Permission lost per week (Monday 00:00 UTC): opt-outs, STOPs, complaints and push-token losses by
    channel, purpose and source, next to the messages sent and those that carried lint warnings.

    Grouped in the database by day (portable to SQLite) and folded into weeks here: a handful of rows.
    """
    burn = (
        PreferenceChange.objects.filter(
            created_at__gte=since, created_at__lt=until, kind__in=list(BURN_KINDS)
        )
        .annotate(day=TruncDate("created_at"))
        .values("day", "channel", "purpose", "source", "kind")
        .annotate(n=Count("id"))
    )
    sent = (
        Message.objects.filter(sent_at__gte=since, sent_at__lt=until)
        .annotate(day=TruncDate("sent_at"))
        .values("day", "channel")
        .annotate(n=Count("id"), warned=Count("id", filter=~Q(warnings=[])))
    )

    def week_of(day: date) -> datetime:
        return _week_start(datetime(day.year, day.month, day.day, tzinfo=UTC))

    rows: dict[tuple, int] = {}
    for r in burn:
        key = (week_of(r["day"]), r["channel"], r["purpose"], r["source"], r["kind"])
        rows[key] = rows.get(key, 0) + r["n"]
    volume: dict[tuple, list[int]] = {}
    for r in sent:
        acc = volume.setdefault((week_of(r["day"]), r["channel"]), [0, 0])
        acc[0] += r["n"]
        acc[1] += r["warned"]
    return {
        "burn": [BurnRow(*key, n) for key, n in sorted(rows.items())],
        "volume": {key: {"sent": v[0], "warned": v[1]} for key, v in sorted(volume.items())},
    }


@dataclass(frozen=True)
class SourceRate:
    source_ref: str
    channel: str
    sent: int
    lost: int
    rate: float
    channel_rate: float

    @property
    def flagged(self) -> bool:
        return self.lost >= consent_conf("BURN_MIN_OPT_OUTS") and self.rate >= 2 * self.channel_rate > 0


def consent_burn_by_source_ref(
    *, since: datetime, until: datetime, source_refs: Iterable[str] | None = None, prefix: str = ""
) -> list[SourceRate]:
    """Opt-out rate per journey/campaign (a message's `source_ref`, or its part before " · ") and
    channel, against the channel's usual rate over the same period. `flagged` when it is at least twice
    the channel's rate (and at least CONSENT['BURN_MIN_OPT_OUTS'] opt-outs, so one person is no trend)."""
    sent_qs = Message.objects.filter(sent_at__gte=since, sent_at__lt=until)
    lost_qs = PreferenceChange.objects.filter(
        created_at__gte=since, created_at__lt=until, kind__in=list(BURN_KINDS), message__isnull=False
    )
    channel_sent = dict(sent_qs.values("channel").annotate(n=Count("id")).values_list("channel", "n"))
    channel_lost = dict(lost_qs.values("channel").annotate(n=Count("id")).values_list("channel", "n"))
    if prefix:
        sent_qs = sent_qs.filter(source_ref__startswith=prefix)
        lost_qs = lost_qs.filter(message__source_ref__startswith=prefix)
    sent_qs = sent_qs.exclude(source_ref="")
    lost_qs = lost_qs.exclude(message__source_ref="")

    def ref(value: str) -> str:
        return value.split(" · ", 1)[0]

    sent: dict[tuple[str, str], int] = {}
    for source_ref, channel, n in (
        sent_qs.values("source_ref", "channel")
        .annotate(n=Count("id"))
        .values_list("source_ref", "channel", "n")
    ):
        sent[(ref(source_ref), channel)] = sent.get((ref(source_ref), channel), 0) + n
    lost: dict[tuple[str, str], int] = {}
    for source_ref, channel, n in (
        lost_qs.values("message__source_ref", "channel")
        .annotate(n=Count("id"))
        .values_list("message__source_ref", "channel", "n")
    ):
        lost[(ref(source_ref), channel)] = lost.get((ref(source_ref), channel), 0) + n
    wanted = set(source_refs) if source_refs is not None else None
    out = []
    for (source_ref, channel), n in sorted(sent.items()):
        if wanted is not None and source_ref not in wanted:
            continue
        gone = lost.get((source_ref, channel), 0)
        base = channel_lost.get(channel, 0) / channel_sent[channel] if channel_sent.get(channel) else 0.0
        out.append(SourceRate(source_ref, channel, n, gone, gone / n if n else 0.0, base))
    return out
