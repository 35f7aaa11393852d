"""Reads on journeys: per-journey counts and the conversion report with touch sequences."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from django.db.models import Count, Q, QuerySet

from orchestrator.authority import model_perm_has, user_channels
from orchestrator.models import CLEARED_STATUSES

from .models import Enrollment, EnrollmentStatus, Journey, StepRun, StepRunStatus, Waiting


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
    )


def journey_counts(*, journey: Journey) -> dict[str, int]:
    rows = Enrollment.objects.filter(journey=journey).values_list("status", "waiting").annotate(n=Count("id"))
    counts = {"active": 0, "waiting": 0, "converted": 0, "exited": 0}
    for status, waiting, n in rows:
        if status == EnrollmentStatus.ACTIVE:
            counts["waiting" if waiting != Waiting.NOTHING else "active"] += n
        else:
            counts[status] += n
    return counts


def journey_report(*, journey: Journey) -> dict[str, Any]:
    """Enrolled, converted, conversion rate, the touch sequences of converted enrollments and a simple
    attribution of conversions to channels by first touch, last touch and linear split."""
    counts = journey_counts(journey=journey)
    enrolled = sum(counts.values())
    converted_ids = list(
        Enrollment.objects.filter(journey=journey, status=EnrollmentStatus.CONVERTED).values_list(
            "pk", flat=True
        )
    )
    touches: dict[int, list[str]] = defaultdict(list)
    runs = (
        StepRun.objects.filter(enrollment_id__in=converted_ids, step_type="send", status=StepRunStatus.SENT)
        .exclude(message=None)
        .filter(message__status__in=list(CLEARED_STATUSES))
        .order_by("enrollment_id", "seq")
        .values_list("enrollment_id", "message__channel")
    )
    for enrollment_id, channel in runs:
        touches[enrollment_id].append(channel)
    sequences = Counter(" → ".join(touches.get(pk, [])) or "(no touch)" for pk in converted_ids)
    first, last, linear = Counter(), Counter(), Counter()
    for channels in touches.values():
        first[channels[0]] += 1
        last[channels[-1]] += 1
        for channel in channels:
            linear[channel] += 1 / len(channels)
    converted = counts["converted"]
    return {
        "journey": journey.slug,
        "enrolled": enrolled,
        "active": counts["active"],
        "waiting": counts["waiting"],
        "converted": converted,
        "exited": counts["exited"],
        "conversion_rate": round(converted / enrolled, 4) if enrolled else 0.0,
        "touch_sequences": [{"sequence": seq, "converted": n} for seq, n in sequences.most_common()],
        "attribution": {
            "computed_over": (
                "Converted enrollments only; a touch is a journey send the governor cleared, in step order. "
                "Each model splits one conversion across channels: first touch, last touch, or linear "
                "(equal shares). Conversions with no touch are not attributed."
            ),
            "first_touch": dict(first),
            "last_touch": dict(last),
            "linear": {k: round(v, 3) for k, v in linear.items()},
        },
    }
