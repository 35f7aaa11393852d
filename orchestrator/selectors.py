"""Reads on the conversation: a recipient's unified history and timeline."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, QuerySet, Window
from django.utils import timezone

from .models import ContactPoint, Event, Message, Recipient, Segment
from .segments import segment_q


def contact_points_reachable(*, recipient_ids: Iterable[int]) -> dict[int, dict[str, list[str]]]:
    """Where each recipient can be reached: channel → addresses of their opted-in contact points, newest
    first. The one definition of "reachable" that sending, channel choice and delivery share (one query)."""
    found: dict[int, dict[str, list[str]]] = {}
    rows = (
        ContactPoint.objects.filter(recipient_id__in=list(recipient_ids), opted_in=True)
        .order_by("-created_at", "-id")
        .values_list("recipient_id", "channel", "address")
    )
    for rid, channel, address in rows:
        found.setdefault(rid, {}).setdefault(channel, []).append(address)
    return found


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
    kind: str  # "message" or "event"
    at: datetime
    obj: Message | Event

    @property
    def message(self) -> Message | None:
        return self.obj if self.kind == "message" else None

    @property
    def event(self) -> Event | None:
        return self.obj if self.kind == "event" else None


def recipient_timeline(
    *,
    recipient: Recipient,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[TimelineEntry]:
    """Messages and events interleaved, newest first: two index range scans merged by time."""
    messages = recipient_messages(recipient=recipient, since=since, until=until)[:limit]
    events = Event.objects.filter(recipient=recipient)
    if since is not None:
        events = events.filter(occurred_at__gte=since)
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    events = events.order_by("-occurred_at", "-id")[:limit]
    merged = heapq.merge(
        (TimelineEntry("message", m.created_at, m) for m in messages),
        (TimelineEntry("event", e.occurred_at, e) for e in events),
        key=lambda entry: entry.at,
        reverse=True,
    )
    return list(merged)[:limit]


SAMPLE_SIZE = 10


def segment_recipients(*, segment: Segment, at: datetime) -> QuerySet[Recipient]:
    """The segment's members now: one set-based query (no Python loop over recipients)."""
    return segment_recipients_for(match=segment.match, conditions=segment.conditions, at=at)


def segment_recipients_for(*, match: str, conditions: list[Mapping], at: datetime) -> QuerySet[Recipient]:
    """Members of an unsaved (validated) definition: what the admin previews while editing."""
    return Recipient.objects.filter(segment_q(match=match, conditions=conditions, at=at))


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


def segment_recipient_ids_batches(
    *, segment: Segment, at: datetime, after_id: int = 0, up_to_id: int | None = None, batch_size: int = 1000
) -> Iterator[list[int]]:
    """The members' ids in ascending batches (keyset pagination on the primary key): a campaign streams
    them; never all in memory at once."""
    qs = segment_recipients(segment=segment, at=at)
    if up_to_id is not None:
        qs = qs.filter(pk__lte=up_to_id)
    while True:
        ids = list(qs.filter(pk__gt=after_id).order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return
        yield ids
        after_id = ids[-1]
