"""Reads on journeys: per-journey counts (the reports live in journeys.reports)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Q, QuerySet

from orchestrator.consent import SourceRate, consent_burn_by_source_ref, consent_conf

from .models import Enrollment, EnrollmentStatus, Journey, Waiting


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
