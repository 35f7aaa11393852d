"""Reads on the conversation: a recipient's unified history and timeline."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from .models import ContactPoint, Event, Message, Recipient


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
