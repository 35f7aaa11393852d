"""django-q2 tasks: thin, take ids, call one service. Each is safe to run twice (the record decides)."""

from __future__ import annotations

from django.utils import timezone

from . import scheduler, services


def enrollments_advance_task(enrollment_ids: list[int]) -> int:
    """Advance these enrollments now if they are due (a duplicate finds them no longer due)."""
    return scheduler.enrollments_advance(now=timezone.now(), ids=list(enrollment_ids)).enrollments


def enrollments_advance_due_task() -> int:
    """Advance whatever is due (after a bulk enrollment)."""
    return scheduler.enrollments_advance(now=timezone.now()).enrollments


def event_apply_task(event_id: int) -> int:
    """Apply an event to enrollments that were busy when it arrived (waiting for their locks)."""
    return len(services.event_reapply(event_id=event_id, now=timezone.now()))


def messages_cancel_task(message_ids: list[int], reason: str) -> int:
    """Suppress still-deferred messages of enrollments that ended."""
    return services.messages_cancel(message_ids=message_ids, reason=reason, now=timezone.now())


def message_wake_task(message_id: int) -> int:
    """A journey message left `deferred`: let its enrollment go on."""
    return scheduler.enrollments_advance_for_message(message_id=message_id, now=timezone.now())


def campaigns_advance_task() -> int:
    """Send due campaign members for a time budget, then hand the rest to a new task (never one task per
    recipient; the due-work pass re-drives it if this task is lost). CAMPAIGN_TASKS of these run at once
    on a campaign's start and share its batches; each hands over to one successor."""
    from django.conf import settings
    from django.db import transaction

    from .campaigns import _kick, campaigns_advance

    budget = float(settings.ORCHESTRATOR.get("CAMPAIGN_TASK_TIME_BUDGET_SECONDS", 25))
    work = campaigns_advance(now=timezone.now(), limit=10**9, time_budget=budget)
    if work.more:
        transaction.on_commit(lambda: _kick(tasks=1), robust=True)
    return work.decided + work.refused
