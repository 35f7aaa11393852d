"""Reads on journeys: per-journey counts (the reports live in journeys.reports)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet

from orchestrator.authority import model_perm_has, user_channels
from orchestrator.consent import SourceRate, consent_burn_by_source_ref, consent_conf
from orchestrator.models import AUTO_CHANNEL, Channel

from .models import Campaign, Enrollment, EnrollmentStatus, Journey, Waiting


def journeys_visible(*, user, queryset: QuerySet[Journey] | None = None) -> QuerySet[Journey]:
    """The journeys `user` may read: all of them for the messaging team; for a channel owner those whose
    channels they all own, and their own drafts. (Journeys are few: the channel test runs in Python.)"""
    qs = Journey.objects.all() if queryset is None else queryset
    if user is None:
        return qs
    if not model_perm_has(user, "journeys.view_journey"):
        return qs.none()
    allowed = user_channels(user)
    if allowed is None:
        return qs
    ids = [
        pk
        for pk, channels, created_by, proposed_by in Journey.objects.values_list(
            "pk", "channels", "created_by_id", "proposed_by_id"
        )
        if set(channels or ()) <= allowed or user.pk in (created_by, proposed_by)
    ]
    return qs.filter(pk__in=ids)


def campaigns_visible(*, user, queryset: QuerySet[Campaign] | None = None) -> QuerySet[Campaign]:
    """The campaigns `user` may read: all of them for the messaging team; for a channel owner those on a
    channel they own (`auto` needs every channel), and their own."""
    qs = Campaign.objects.all() if queryset is None else queryset
    if user is None:
        return qs
    if not model_perm_has(user, "journeys.view_campaign"):
        return qs.none()
    allowed = user_channels(user)
    if allowed is None:
        return qs
    mine = Q(created_by_id=user.pk) | Q(proposed_by_id=user.pk)
    if set(Channel.values) <= allowed:
        return qs.filter(Q(channel__in=[*allowed, AUTO_CHANNEL]) | mine)
    return qs.filter(Q(channel__in=list(allowed)) | mine)


def journeys_with_counts() -> QuerySet[Journey]:
    """Journeys annotated with active (due or running), waiting, converted and exited enrollments."""
    return Journey.objects.annotate(
        n_active=Count(
            "enrollments", filter=Q(enrollments__status=EnrollmentStatus.ACTIVE, enrollments__waiting="")
        ),
        n_waiting=Count(
            "enrollments", filter=Q(enrollments__status=EnrollmentStatus.ACTIVE) & ~Q(enrollments__waiting="")
        ),
        n_converted=Count("enrollments", filter=Q(enrollments__status=EnrollmentStatus.CONVERTED)),
        n_exited=Count("enrollments", filter=Q(enrollments__status=EnrollmentStatus.EXITED)),
        n_errored=Count("enrollments", filter=Q(enrollments__status=EnrollmentStatus.ERRORED)),
    )


def journey_counts(*, journey: Journey) -> dict[str, int]:
    rows = Enrollment.objects.filter(journey=journey).values_list("status", "waiting").annotate(n=Count("id"))
    counts = {"active": 0, "waiting": 0, "converted": 0, "exited": 0, "errored": 0}
    for status, waiting, n in rows:
        if status == EnrollmentStatus.ACTIVE:
            counts["waiting" if waiting != Waiting.NOTHING else "active"] += n
        else:
            counts[status] += n
    return counts


def enrollments_errored_count() -> int:
    """Enrollments the scheduler stopped on an error (for the admin's home and the journey list)."""
    return Enrollment.objects.filter(status=EnrollmentStatus.ERRORED).count()


def journey_burn(*, journey: Journey, now: datetime) -> list[SourceRate]:
    """The journey's opt-out rate per channel against each channel's usual rate (its page flags ≥ 2×)."""
    lookback = consent_conf("BURN_LOOKBACK")
    return consent_burn_by_source_ref(
        since=now - lookback, until=now, source_refs=[journey.slug], prefix=f"{journey.slug} · "
    )


def campaign_progress(*, campaign) -> dict[str, Any]:
    """Where a campaign stands: members by state, and its messages now by status, channel and the rule
    that decided them (two grouped queries over its own members)."""
    from .models import CampaignRecipient, MemberState

    states = dict(
        CampaignRecipient.objects.filter(campaign=campaign)
        .values_list("state")
        .annotate(n=Count("id"))
        .order_by()
    )
    by_status: Counter = Counter()
    by_channel: Counter = Counter()
    by_rule: Counter = Counter()
    rows = (
        CampaignRecipient.objects.filter(campaign=campaign, state=MemberState.DECIDED)
        .values_list("message__status", "message__channel", "message__rule")
        .annotate(n=Count("id"))
        .order_by()
    )
    for status, channel, rule, n in rows:
        by_status[status or "erased"] += n
        by_channel[channel or "erased"] += n
        by_rule[rule or "within every cap"] += n
    refused = (
        CampaignRecipient.objects.filter(campaign=campaign, state=MemberState.REFUSED)
        .values_list("detail")
        .annotate(n=Count("id"))
        .order_by("-n")[:5]
    )
    return {
        "audience": sum(states.values()),
        "undecided": states.get(MemberState.PENDING, 0),
        "decided": states.get(MemberState.DECIDED, 0),
        "refused": states.get(MemberState.REFUSED, 0),
        "cancelled": states.get(MemberState.CANCELLED, 0),
        "by_status": dict(by_status.most_common()),
        "by_channel": dict(by_channel.most_common()),
        "by_rule": dict(by_rule.most_common()),
        "refused_reasons": {detail: n for detail, n in refused},
    }


def recipient_journey_timeline(
    *, recipient, since: datetime | None = None, until: datetime | None = None, limit: int = 100
) -> list:
    """The recipient's journey enrollments and exits as timeline entries (kind "journey"), newest first:
    one entry when they entered, one when they converted, exited or errored."""
    from orchestrator.selectors import TimelineEntry

    rows = Enrollment.objects.filter(recipient=recipient).select_related("journey").order_by("-entered_at")
    if until is not None:
        rows = rows.filter(entered_at__lt=until)
    if since is not None:
        rows = rows.filter(Q(entered_at__gte=since) | Q(ended_at__gte=since))
    entries = []
    for enrollment in rows[:limit]:
        entries.append(TimelineEntry("journey", enrollment.entered_at, JourneyMoment("entered", enrollment)))
        if enrollment.ended_at and enrollment.status != EnrollmentStatus.ACTIVE:
            entries.append(
                TimelineEntry("journey", enrollment.ended_at, JourneyMoment(enrollment.status, enrollment))
            )
    return [e for e in entries if (since is None or e.at >= since) and (until is None or e.at < until)]


@dataclass(frozen=True)
class JourneyMoment:
    """One step of a recipient's life in a journey, for their timeline."""

    what: str  # "entered", "converted", "exited", "errored"
    enrollment: Any

    @property
    def text(self) -> str:
        e = self.enrollment
        name = e.journey.name
        if self.what == "entered":
            how = {"event": "on a product event", "api": "by the API", "admin": "from the admin"}.get(
                e.trigger, ""
            )
            held = " (held out: gets nothing from it)" if e.held_out else ""
            return f"Entered the journey {name} {how}{held}".strip()
        if self.what == "converted":
            return f"Converted in the journey {name}" + (f": {e.exit_reason}" if e.exit_reason else "")
        if self.what == "errored":
            return f"Stopped in the journey {name} by an error: {e.error[:200]}"
        return f"Left the journey {name}" + (f": {e.exit_reason}" if e.exit_reason else "")
