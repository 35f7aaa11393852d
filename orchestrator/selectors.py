"""Reads on the conversation: reachability, a recipient's unified history and timeline."""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, QuerySet, TextField, Window
from django.db.models.functions import Cast, Left, Length
from django.utils import timezone
from django.utils.module_loading import import_string

from .db import hot_cursor, ids_in
from .models import Channel, ContactPoint, Event, Message, Preference, Recipient, Segment, Source
from .segments import segment_q
from .snapshot import VERSION_SQL, settings_version_note

# Reachability, the one rule: a contact point may be sent to when the recipient keeps it opted in and no
# provider has marked it undeliverable. The pipeline, `auto` channel choice, the journey scheduler and
# delivery all read it through the functions below.
REACHABLE = Q(opted_in=True, undeliverable_at__isnull=True)
# A reply to the recipient's own inbound message (the STOP confirmation) only needs a working address.
REACHABLE_FOR_REPLY = Q(undeliverable_at__isnull=True)


def reachable_kind(source: str) -> str:
    """Which reachability rule a message source follows: replies have their own, every other the same."""
    return Source.REPLY if source == Source.REPLY else ""


def reachable_q(*, source: str = "") -> Q:
    """The reachability condition on ContactPoint for a message from `source`."""
    return REACHABLE_FOR_REPLY if source == Source.REPLY else REACHABLE


def contact_points_reachable(*, source: str = "") -> QuerySet[ContactPoint]:
    """Contact points a message from `source` may go to."""
    return ContactPoint.objects.filter(reachable_q(source=source))


def recipients_reachable_points(
    *, recipient_ids: Iterable[int], source: str = ""
) -> dict[int, dict[str, list[str]]]:
    """Where each recipient can be reached: channel → addresses of their reachable contact points, newest
    first (set-based: one query for the batch). Sending, channel choice and delivery all read this."""
    found: dict[int, dict[str, list[str]]] = {}
    ids = list(recipient_ids)
    if not ids:
        return found
    # Plain SQL with the rule compiled from its Q (one owner): the ORM spent longer building a
    # thousand-id IN than the database took to answer it.
    where, where_params = reachable_where_sql(reachable_kind(source))
    ids_where, ids_params = ids_in("recipient_id", ids)
    cp = ContactPoint._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT recipient_id, channel, address FROM {cp} WHERE {where} AND {ids_where}"
            f" ORDER BY created_at DESC, id DESC",
            [*where_params, *ids_params],
        )
        for rid, channel, address in cursor.fetchall():
            points = found.get(rid)
            if points is None:
                points = found[rid] = {}
            addresses = points.get(channel)
            if addresses is None:
                points[channel] = [address]
            else:
                addresses.append(address)
    return found


@dataclass(frozen=True)
class HeldRecipient:
    """A recipient whose row lock this transaction holds, with what one send reads under it."""

    id: int
    external_id: str
    timezone: str
    points: dict[str, list[str]]  # channel -> reachable addresses, newest first
    opted_out: bool  # of the (channel, purpose) asked for

    def as_recipient(self) -> Recipient:
        """A Recipient standing for this row in what a send returns (id, external id, time zone only)."""
        recipient = Recipient(id=self.id, external_id=self.external_id, timezone=self.timezone)
        recipient._state.adding = False
        return recipient


@lru_cache(maxsize=4)
def reachable_where_sql(kind: str) -> tuple[str, tuple]:
    """The reachability rule (REACHABLE / REACHABLE_FOR_REPLY, by `reachable_kind`) as SQL on the contact
    point table (columns named with the table's name) and its parameters, compiled once from the same Q,
    so the rule keeps one owner when a statement reads reachability along with something else."""
    query = ContactPoint.objects.filter(reachable_q(source=kind)).query
    where, params = query.where.as_sql(query.get_compiler(connection=connection), connection)
    return where, tuple(params)


def recipient_hold(
    *,
    channel: str,
    purpose: str,
    source: str = "",
    recipient_id: int | None = None,
    external_id: str | None = None,
) -> HeldRecipient | None:
    """Lock one recipient's row (PostgreSQL, inside the caller's transaction) and read, in the same
    statement, where they can be reached and whether they opted out of `purpose` on `channel`: the one
    read of a single send before its window count. By id or by external id (None: no such recipient).

    The subqueries see the statement's snapshot, taken before a wait for the lock; the governor's count
    that follows is a fresh statement (governor.counting explains why that keeps caps exact)."""
    where, where_params = reachable_where_sql(reachable_kind(source))
    cp, pref, rec = ContactPoint._meta.db_table, Preference._meta.db_table, Recipient._meta.db_table
    sql = (
        f"SELECT r.id, r.external_id, r.timezone,"
        f" EXISTS(SELECT 1 FROM {pref} p WHERE p.recipient_id = r.id AND p.channel = %s AND p.purpose = %s"
        f" AND NOT p.opted_in),"
        f" ARRAY(SELECT ARRAY[{cp}.channel, {cp}.address] FROM {cp} WHERE {cp}.recipient_id = r.id"
        f" AND {where} ORDER BY {cp}.created_at DESC, {cp}.id DESC), {VERSION_SQL}"
        f" FROM {rec} r WHERE r.{'id' if external_id is None else 'external_id'} = %s FOR UPDATE OF r"
    )
    key = recipient_id if external_id is None else external_id
    with hot_cursor() as (cursor, prepare):
        cursor.execute(sql, [channel, purpose, *where_params, key], **prepare)
        row = cursor.fetchone()
    if row is None:
        return None
    settings_version_note(row[5] or 0)  # the settings version rides along: no statement of its own
    points: dict[str, list[str]] = {}
    for ch, address in row[4]:
        points.setdefault(ch, []).append(address)
    return HeldRecipient(row[0], row[1], row[2], points, bool(row[3]))


def recipients_unreachable_reasons(*, recipient_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """Why each channel a recipient has contact points on, but cannot be reached on, is closed (set-based:
    one query for the batch)."""
    reasons: dict[tuple[int, str], list[str]] = defaultdict(list)
    open_channels: set[tuple[int, str]] = set()
    for cp in ContactPoint.objects.filter(recipient_id__in=list(recipient_ids)):
        key = (cp.recipient_id, cp.channel)
        if cp.reachable:
            open_channels.add(key)
        elif cp.undeliverable_at is not None:
            who = cp.address or Channel(cp.channel).label
            reasons[key].append(
                f"{who} is undeliverable since {cp.undeliverable_at:%Y-%m-%d %H:%M} UTC: "
                f"{cp.undeliverable_reason or 'no reason given'}"
            )
        else:
            reasons[key].append(f"{cp.address or Channel(cp.channel).label} is opted out")
    found: dict[int, dict[str, str]] = defaultdict(dict)
    for (rid, channel), why in reasons.items():
        if (rid, channel) not in open_channels:
            found[rid][channel] = "; ".join(why)
    return found


def recipient_unreachable_reasons(*, recipient: Recipient) -> dict[str, str]:
    """Why each channel the recipient has contact points on, but cannot be reached on, is closed."""
    return recipients_unreachable_reasons(recipient_ids=[recipient.pk]).get(recipient.pk, {})


def recipient_messages(
    *,
    recipient: Recipient,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Message]:
    """The recipient's messages on every channel, newest first (an index range scan on
    (recipient, created_at))."""
    qs = Message.objects.filter(recipient=recipient)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    return qs.order_by("-created_at", "-id")


def recipient_messages_recent(
    *, recipient_id: int, hours: int = 24, now: datetime | None = None
) -> list[Message]:
    """What did this person get in the last `hours` hours, across all channels? (The benchmarked query.)"""
    now = now or timezone.now()
    return list(
        Message.objects.filter(
            recipient_id=recipient_id, created_at__gte=now - timedelta(hours=hours)
        ).order_by("-created_at", "-id")
    )


@dataclass(frozen=True)
class TimelineEntry:
    kind: str  # "message", "event", or one an app adds (journeys: "journey")
    at: datetime
    obj: Any

    @property
    def message(self) -> Message | None:
        return self.obj if self.kind == "message" else None

    @property
    def event(self) -> Event | None:
        return self.obj if self.kind == "event" else None


# Event properties on the timeline: the first characters only (a 2 MB event must not make a 2 MB page);
# the event's own page shows them whole.
EVENT_PROPERTIES_HEAD = 300


def recipient_timeline(
    *,
    recipient: Recipient,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    channel: str = "",
    status: str = "",
    events: bool = True,
    properties: bool = True,
) -> list[TimelineEntry]:
    """Messages and events interleaved, newest first: two index range scans merged by time.

    `channel` and `status` filter the messages (events have neither: filtering by them leaves events out, as
    does `events=False`). With `properties=False` events come without their properties: `properties_head`
    holds the first EVENT_PROPERTIES_HEAD characters of their JSON and `properties_size` its length.
    """
    messages = recipient_messages(recipient=recipient, since=since, until=until)
    if channel:
        messages = messages.filter(channel=channel)
    if status:
        messages = messages.filter(status=status)
    entries = [TimelineEntry("message", m.created_at, m) for m in messages[:limit]]
    if events and not channel and not status:
        rows = Event.objects.filter(recipient=recipient)
        if not properties:
            text = Cast("properties", output_field=TextField())
            rows = rows.defer("properties").annotate(
                properties_head=Left(text, EVENT_PROPERTIES_HEAD), properties_size=Length(text)
            )
        if since is not None:
            rows = rows.filter(occurred_at__gte=since)
        if until is not None:
            rows = rows.filter(occurred_at__lt=until)
        rows = rows.order_by("-occurred_at", "-id")[:limit]
        entries = list(
            heapq.merge(
                entries,
                (TimelineEntry("event", e.occurred_at, e) for e in rows),
                key=lambda entry: entry.at,
                reverse=True,
            )
        )
    return entries[:limit]


def recipient_timeline_extras(
    *, recipient: Recipient, since: datetime | None = None, until: datetime | None = None, limit: int = 100
) -> list[TimelineEntry]:
    """Entries the apps above add to a recipient's timeline (journeys: enrollments and exits), from the
    functions named in settings.ORCHESTRATOR["TIMELINE_EXTRAS"] (the floor imports none of them)."""
    entries: list[TimelineEntry] = []
    for path in settings.ORCHESTRATOR.get("TIMELINE_EXTRAS", []):
        entries.extend(import_string(path)(recipient=recipient, since=since, until=until, limit=limit))
    return sorted(entries, key=lambda entry: entry.at, reverse=True)[:limit]


SAMPLE_SIZE = 10


def segment_recipients(*, segment: Segment, at: datetime) -> QuerySet[Recipient]:
    """The segment's members now: one set-based query (no Python loop over recipients)."""
    return segment_recipients_for(match=segment.match, conditions=segment.conditions, at=at)


def segment_recipients_for(*, match: str, conditions: list[Mapping], at: datetime) -> QuerySet[Recipient]:
    """Members of an unsaved (validated) definition: what the admin previews while editing. Erased
    recipients (orchestrator.erasure) are never members."""
    return Recipient.objects.filter(
        segment_q(match=match, conditions=conditions, at=at), erased_at__isnull=True
    )


@dataclass(frozen=True)
class SegmentPreview:
    count: int
    sample: list[str]


def segment_preview_for(*, match: str, conditions: list[Mapping], at: datetime) -> SegmentPreview:
    """How many match and the first few external ids, in ONE query (the count is a window over the
    matching rows, taken before the LIMIT)."""
    rows = list(
        segment_recipients_for(match=match, conditions=conditions, at=at)
        .annotate(total=Window(Count("id")))
        .order_by("id")
        .values_list("external_id", "total")[:SAMPLE_SIZE]
    )
    return SegmentPreview(count=rows[0][1] if rows else 0, sample=[r[0] for r in rows])


def segment_preview(*, segment: Segment, at: datetime) -> SegmentPreview:
    return segment_preview_for(match=segment.match, conditions=segment.conditions, at=at)
