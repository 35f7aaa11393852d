"""The admin home as the team's control room (roof level, like the API: it reads every app).

The messaging team sees today's sends per channel against the caps, the deferred queue, dead letters,
failed background tasks and what awaits review, with charts; a channel owner sees their drafts and what
the review said. A handful of grouped queries; nothing is written.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib import admin
from django.db.models import Count, Q
from django.utils import timezone
from django_q.models import Failure

from governor.selectors import governor_overview
from journeys.models import Journey, JourneyStatus
from journeys.selectors import journeys_visible

from .authority import ALL_CHANNELS_PERM, model_perm_has, user_channels
from .models import Channel, Message, MessageStatus

OWNER_STATUSES = [JourneyStatus.DRAFT, JourneyStatus.PROPOSED, JourneyStatus.APPROVED]


def control_room_team(*, now: datetime) -> dict:
    overview = governor_overview(now=now)
    since = overview["since"]
    decided = (
        Message.objects.filter(decided_at__gte=since, decided_at__lte=now)
        .order_by()
        .values("channel")
        .annotate(
            cleared=Count("id", filter=Q(accepted_at__isnull=False)),
            deferred=Count("id", filter=Q(status=MessageStatus.DEFERRED)),
            stopped=Count("id", filter=Q(status__in=[MessageStatus.SUPPRESSED, MessageStatus.EXPIRED])),
        )
    )
    by_channel = {row["channel"]: row for row in decided}
    channels = [
        {
            "channel": c,
            "label": Channel(c).label,
            "cleared": by_channel.get(c, {}).get("cleared", 0),
            "deferred": by_channel.get(c, {}).get("deferred", 0),
            "stopped": by_channel.get(c, {}).get("stopped", 0),
        }
        for c in Channel.values
    ]
    # Against the caps: how many recipients a cap rule held back today, per rule.
    held = (
        Message.objects.filter(decided_at__gte=since, decided_at__lte=now)
        .exclude(rule="")
        .order_by()
        .values("rule")
        .annotate(messages=Count("id"), recipients=Count("recipient_id", distinct=True))
        .order_by("-messages")[:8]
    )
    dead = Message.objects.filter(status=MessageStatus.FAILED)
    failures = Failure.objects.all()
    return {
        "channels": channels,
        "chart": {
            "labels": [c["label"] for c in channels],
            "cleared": [c["cleared"] for c in channels],
            "deferred": [c["deferred"] for c in channels],
            "stopped": [c["stopped"] for c in channels],
        },
        "held": list(held),
        "rules": overview["rules"],
        "queue": overview["queue"],
        "pauses": overview["pauses"],
        "dead_letters": {
            "total": dead.count(),
            "today": dead.filter(failed_at__gte=since).count(),
            "latest": list(dead.select_related("recipient").order_by("-failed_at")[:5]),
        },
        "failed_tasks": {
            "total": failures.count(),
            "day": failures.filter(stopped__gte=now - timedelta(hours=24)).count(),
            "latest": list(failures.order_by("-stopped")[:5]),
        },
        "awaiting_review": list(
            Journey.objects.filter(status=JourneyStatus.PROPOSED)
            .select_related("proposed_by")
            .order_by("proposed_at")
        ),
        "since": since,
    }


def control_room_owner(*, user) -> dict:
    mine = journeys_visible(user=user).filter(
        Q(created_by=user) | Q(proposed_by=user) | Q(status__in=OWNER_STATUSES)
    )
    return {
        "owned": [c for c in Channel.values if c in (user_channels(user) or ())],
        "drafts": list(mine.select_related("reviewed_by").order_by("-updated_at")[:30]),
    }


def control_room(request) -> dict:
    user = request.user
    now = timezone.now()
    team = user.is_superuser or model_perm_has(user, ALL_CHANNELS_PERM)
    context = {"control_room": True, "control_team": team, "now": now}
    if team:
        context |= control_room_team(now=now)
    if model_perm_has(user, "journeys.add_journey") and not team:
        context |= control_room_owner(user=user) | {"control_owner": True}
    return context


def control_room_install(site: admin.AdminSite = admin.site) -> None:
    """Make the admin index render the control room above the app list (templates/admin/index.html)."""
    if getattr(site.index, "_control_room", False):
        return
    original = site.index

    def index(request, extra_context=None):
        return original(request, extra_context={**control_room(request), **(extra_context or {})})

    index._control_room = True
    site.index = index
