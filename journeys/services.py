"""Writes on journeys: definitions and their lifecycle, enrollments, and the reactions to product events
and message status changes. One action = one transaction; enqueueing happens on commit."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Max, Q, Value, When
from django_q.tasks import async_task

from governor.holdout import holdout_assigned
from orchestrator.authority import authorize
from orchestrator.history import message_status_move
from orchestrator.models import Event, Message, MessageStatus, Recipient

from .definition import (
    DefinitionError,
    DefinitionInvalid,
    definition_channels,
    definition_compile,
    definition_validate,
    duration_parse,
)
from .models import (
    Enrollment,
    EnrollmentStatus,
    EnrollmentTrigger,
    Journey,
    JourneyStatus,
    JourneyVersion,
    ReentryPolicy,
    ReviewOutcome,
    StepRun,
    StepRunStatus,
    Waiting,
)

logger = logging.getLogger(__name__)
SLUG_RE = re.compile(r"[-a-zA-Z0-9_]{1,100}")


class JourneyConflict(Exception):
    """The journey's state does not allow this (the API answers 409)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


# action → (statuses it may start from, status it leads to). `revise` is an addition to the contract's
# actions: it takes an approved or paused journey back to draft so a change makes a new version.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "propose": (frozenset({JourneyStatus.DRAFT}), JourneyStatus.PROPOSED),
    "approve": (frozenset({JourneyStatus.PROPOSED}), JourneyStatus.APPROVED),
    "reject": (frozenset({JourneyStatus.PROPOSED}), JourneyStatus.DRAFT),
    "activate": (frozenset({JourneyStatus.APPROVED, JourneyStatus.PAUSED}), JourneyStatus.ACTIVE),
    "pause": (frozenset({JourneyStatus.ACTIVE}), JourneyStatus.PAUSED),
    "archive": (
        frozenset(
            {
                JourneyStatus.DRAFT,
                JourneyStatus.PROPOSED,
                JourneyStatus.APPROVED,
                JourneyStatus.ACTIVE,
                JourneyStatus.PAUSED,
            }
        ),
        JourneyStatus.ARCHIVED,
    ),
    "revise": (frozenset({JourneyStatus.APPROVED, JourneyStatus.PAUSED}), JourneyStatus.DRAFT),
}


def journey_action_authorize(*, user: Any, action: str, journey: Journey) -> None:
    """Raise authority.Denied unless `user` may do `action` on this journey (None: the system)."""
    authorize(user, f"journeys.{action}_journey", journey)


def _enqueue(func: str, *args: Any) -> None:
    transaction.on_commit(lambda: async_task(func, *args))


def _definition_fields(definition: Mapping[str, Any]) -> dict[str, Any]:
    reentry = definition.get("reentry") or {}
    return {
        "name": definition["name"],
        "owner_channel": definition.get("owner_channel", "") or "",
        "channels": definition_channels(definition),
    } | (
        {
            "reentry": reentry.get("policy", ReentryPolicy.AFTER_EXIT),
            "reentry_cooldown": duration_parse(reentry.get("cooldown")) if reentry.get("cooldown") else None,
        }
    )


def journey_create(*, definition: Mapping[str, Any], now: datetime, user: Any = None) -> Journey:
    """Create a draft journey with its first version. Raises DefinitionInvalid or authority.Denied
    (a channel owner may only draft sends on their own channels); nothing is saved then."""
    if not isinstance(definition, Mapping):
        raise DefinitionInvalid([DefinitionError("", "definition", "invalid", "Expected a JSON object.")])
    authorize(user, "journeys.add_journey")
    definition = dict(definition)
    slug = definition.get("slug")
    if not isinstance(slug, str) or not SLUG_RE.fullmatch(slug):
        raise DefinitionInvalid(
            [DefinitionError("", "slug", "invalid_slug", "slug is required: letters, digits, - and _ only.")]
        )
    definition_validate(definition, slug=slug)
    draft = Journey(slug=slug, **_definition_fields(definition))
    authorize(user, "journeys.add_journey", draft)
    with transaction.atomic():
        if Journey.objects.filter(slug=slug).exists():
            raise JourneyConflict("slug_taken", f"A journey with slug {slug!r} already exists.")
        draft.created_at, draft.created_by = now, user
        draft.save()
        JourneyVersion.objects.create(journey=draft, number=1, definition=definition, created_at=now)
    return draft


def journey_latest_version(*, journey: Journey) -> JourneyVersion:
    return journey.versions.order_by("-number").first()


def journey_update(
    *, journey: Journey, changes: Mapping[str, Any], now: datetime, user: Any = None
) -> JourneyVersion:
    """Edit a draft journey: its draft version in place, or a new version if the last one was approved.
    The editor must be allowed on the journey as it is and as it would become (its channels)."""
    if not isinstance(changes, Mapping):
        raise DefinitionInvalid([DefinitionError("", "definition", "invalid", "Expected a JSON object.")])
    with transaction.atomic():
        journey = Journey.objects.select_for_update().get(pk=journey.pk)
        authorize(user, "journeys.change_journey", journey)
        if journey.status != JourneyStatus.DRAFT:
            raise JourneyConflict(
                "not_draft",
                f"{journey.slug} is {journey.status}: only a draft can be edited "
                "(pause it, then `revise` to start a new version).",
            )
        latest = journey_latest_version(journey=journey)
        definition = {**latest.definition, **dict(changes)}
        definition_validate(definition, slug=journey.slug)
        authorize(
            user,
            "journeys.change_journey",
            Journey(slug=journey.slug, name=journey.name, channels=definition_channels(definition)),
        )
        if latest.frozen:
            latest = JourneyVersion.objects.create(
                journey=journey, number=latest.number + 1, definition=definition, created_at=now
            )
        else:
            latest.definition = definition
            latest.save(update_fields=["definition"])
        for key, value in _definition_fields(definition).items():
            setattr(journey, key, value)
        journey.save()
    return latest


def proposal_review_record(
    proposal: Any, *, action: str, user: Any, now: datetime, comment: str = ""
) -> None:
    """What a proposal (a journey, a campaign) keeps of its review: proposing records the proposer and
    clears the last review; approving or rejecting records the reviewer, the outcome and the comment the
    proposer reads. In memory; the caller saves. `user` None is the system (no person recorded)."""
    person = user if getattr(user, "pk", None) else None
    if action == "propose":
        proposal.proposed_by, proposal.proposed_at = person, now
        proposal.reviewed_by, proposal.reviewed_at = None, None
        proposal.review_outcome, proposal.review_comment = "", ""
    elif action in ("approve", "reject"):
        proposal.reviewed_by, proposal.reviewed_at = person, now
        proposal.review_outcome = ReviewOutcome.APPROVED if action == "approve" else ReviewOutcome.REJECTED
        proposal.review_comment = comment.strip()


def journey_transition(
    *, journey: Journey, action: str, now: datetime, user: Any = None, comment: str = ""
) -> Journey:
    """Move a journey along its lifecycle; JourneyConflict for an illegal move, authority.Denied for a
    role that may not. Proposing records the proposer; approving or rejecting records the review and its
    comment (what the proposer reads on their draft)."""
    if action not in TRANSITIONS:
        raise JourneyConflict("unknown_action", f"Unknown action {action!r}.")
    sources, target = TRANSITIONS[action]
    with transaction.atomic():
        journey = Journey.objects.select_for_update().get(pk=journey.pk)
        journey_action_authorize(user=user, action=action, journey=journey)
        if journey.status not in sources:
            allowed = ", ".join(sorted(sources))
            raise JourneyConflict(
                "illegal_transition",
                f"Cannot {action} {journey.slug}: it is {journey.status} (allowed from {allowed}).",
            )
        proposal_review_record(journey, action=action, user=user, now=now, comment=comment)
        if action == "approve":
            version = journey_latest_version(journey=journey)
            # Re-check: the channel lint may have changed since the draft was saved.
            definition_validate(version.definition, slug=journey.slug)
            if not version.frozen:
                version.approved_at, version.approved_by = now, user
                version.save(update_fields=["approved_at", "approved_by"])
            journey.live_version = version
            journey.trigger_event = (version.definition.get("trigger") or {}).get("event", "") or ""
            for key, value in _definition_fields(version.definition).items():
                setattr(journey, key, value)
        if action == "activate" and journey.live_version_id is None:
            raise JourneyConflict("not_approved", f"{journey.slug} has no approved version.")
        if action == "archive":
            enrollments_exit(journey=journey, reason="the journey was archived", now=now)
        journey.status = target
        journey.save()
    return journey


# --- enrollments ----------------------------------------------------------------------------------


def enrollment_holdout(*, journey: Journey, recipient_id: int, share) -> bool:
    """Is this recipient held out of this journey? Deterministic per (recipient, journey): the same
    answer on every re-entry for as long as the share stays the same."""
    return holdout_assigned(scope=f"journey:{journey.pk}", recipient_id=recipient_id, share=share)


class EnrollmentRefused(JourneyConflict):
    """The recipient may not enter the journey now (not active, or the re-entry policy)."""


def _reentry_refusal(*, journey: Journey, recipient_id: int, now: datetime) -> str | None:
    previous = Enrollment.objects.filter(journey=journey, recipient_id=recipient_id)
    if previous.filter(status=EnrollmentStatus.ACTIVE).exists():
        return "is already in this journey"
    if journey.reentry == ReentryPolicy.NEVER and previous.exists():
        return "was in this journey before and its re-entry policy is never"
    if journey.reentry == ReentryPolicy.COOLDOWN and journey.reentry_cooldown:
        last = previous.aggregate(last=Max("ended_at"))["last"]
        if last and last > now - journey.reentry_cooldown:
            return f"left this journey less than {journey.reentry_cooldown} ago (cool-down)"
    return None


def enrollment_create(
    *,
    journey: Journey,
    recipient: Recipient,
    now: datetime,
    trigger: str = EnrollmentTrigger.API,
    event: Event | None = None,
) -> Enrollment:
    """Enroll a recipient now (on the live version); the first step runs right after commit."""
    if journey.status != JourneyStatus.ACTIVE:
        raise EnrollmentRefused("journey_not_active", f"{journey.slug} is {journey.status}, not active.")
    refusal = _reentry_refusal(journey=journey, recipient_id=recipient.pk, now=now)
    if refusal:
        raise EnrollmentRefused("reentry_refused", f"{recipient.external_id} {refusal}.")
    version = journey.live_version
    compiled = _live_compiled(journey)
    try:
        with transaction.atomic():
            enrollment = Enrollment.objects.create(
                journey=journey,
                version=version,
                recipient=recipient,
                trigger=trigger,
                trigger_event=event,
                step_id=compiled.first,
                next_run_at=now,
                entered_at=now,
                goal_deadline=now + compiled.goal_within if compiled.goal_within else None,
                held_out=enrollment_holdout(
                    journey=journey, recipient_id=recipient.pk, share=compiled.holdout_share
                ),
                holdout_share=compiled.holdout_share,
            )
    except IntegrityError as exc:  # a concurrent enrollment of the same recipient won
        raise EnrollmentRefused(
            "reentry_refused", f"{recipient.external_id} is already in this journey."
        ) from exc
    _enqueue("journeys.tasks.enrollments_advance_task", [enrollment.pk])
    return enrollment


def _live_compiled(journey: Journey):
    """The live version, compiled; a stored version that cannot run refuses enrollment (never a 500, and
    an event that triggers it still records)."""
    try:
        return definition_compile(journey.live_version.definition)
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"{journey.slug} cannot run its live version: {exc}"
        raise EnrollmentRefused("journey_broken", detail) from exc


@dataclass(frozen=True)
class BulkEnrollResult:
    enrolled: int
    skipped: int


def enrollments_create_bulk(
    *, journey: Journey, recipient_ids: Iterable[int], now: datetime, trigger: str = EnrollmentTrigger.ADMIN
) -> BulkEnrollResult:
    """Enroll many recipients at once (the admin action); those the re-entry policy refuses are skipped."""
    if journey.status != JourneyStatus.ACTIVE:
        raise EnrollmentRefused("journey_not_active", f"{journey.slug} is {journey.status}, not active.")
    ids = set(recipient_ids)
    version = journey.live_version
    compiled = _live_compiled(journey)
    with transaction.atomic():
        previous = Enrollment.objects.filter(journey=journey, recipient_id__in=ids)
        blocked = set(previous.filter(status=EnrollmentStatus.ACTIVE).values_list("recipient_id", flat=True))
        if journey.reentry == ReentryPolicy.NEVER:
            blocked |= set(previous.values_list("recipient_id", flat=True))
        elif journey.reentry == ReentryPolicy.COOLDOWN and journey.reentry_cooldown:
            blocked |= set(
                previous.filter(ended_at__gt=now - journey.reentry_cooldown).values_list(
                    "recipient_id", flat=True
                )
            )
        rows = [
            Enrollment(
                journey=journey,
                version=version,
                recipient_id=rid,
                trigger=trigger,
                step_id=compiled.first,
                next_run_at=now,
                entered_at=now,
                goal_deadline=now + compiled.goal_within if compiled.goal_within else None,
                held_out=enrollment_holdout(journey=journey, recipient_id=rid, share=compiled.holdout_share),
                holdout_share=compiled.holdout_share,
            )
            for rid in sorted(ids - blocked)
        ]
        # ON CONFLICT DO NOTHING: a concurrent enrollment of the same recipient keeps its own run.
        created = Enrollment.objects.bulk_create(rows, ignore_conflicts=True)
        count = Enrollment.objects.filter(
            journey=journey,
            status=EnrollmentStatus.ACTIVE,
            recipient_id__in=[r.recipient_id for r in created],
            entered_at=now,
        ).count()
        _enqueue("journeys.tasks.enrollments_advance_due_task")
    return BulkEnrollResult(enrolled=count, skipped=len(ids) - count)


def enrollments_exit(*, journey: Journey, reason: str, now: datetime) -> int:
    """End every active enrollment of a journey (archive): nothing more will be sent from it."""
    active = Enrollment.objects.filter(journey=journey, status=EnrollmentStatus.ACTIVE)
    waiting_runs = list(active.exclude(waiting_run=None).values_list("waiting_run_id", flat=True))
    messages = list(
        active.filter(waiting=Waiting.MESSAGE)
        .exclude(wait_message=None)
        .values_list("wait_message_id", flat=True)
    )
    StepRun.objects.filter(pk__in=waiting_runs).update(
        status=StepRunStatus.CANCELLED, finished_at=now, detail=reason
    )
    count = active.update(
        status=EnrollmentStatus.EXITED, ended_at=now, next_run_at=None, waiting="", exit_reason=reason
    )
    if messages:
        _enqueue("journeys.tasks.messages_cancel_task", messages, f"Cancelled: {reason}.")
    return count


def messages_cancel(*, message_ids: Iterable[int], reason: str, now: datetime) -> int:
    """Suppress journey messages still deferred whose enrollment ended (converted or exited).

    Runs outside the event's transaction (a task), so it never waits on a message while holding the
    recipient's key lock (the governor's re-drive locks in the other order).
    """
    with transaction.atomic():
        deferred = list(
            Message.objects.select_for_update().filter(
                pk__in=list(message_ids), status=MessageStatus.DEFERRED
            )
        )
        for message in deferred:
            message.rule, message.reason = "journey", reason
            message_status_move(
                message=message, status=MessageStatus.SUPPRESSED, at=now, update_fields=["rule", "reason"]
            )
    return len(deferred)


def _goal_reached(enrollment: Enrollment, event: Event) -> bool:
    if event.name != enrollment.version.definition.get("goal", {}).get("event"):
        return False
    return event.occurred_at >= enrollment.entered_at and (
        enrollment.goal_deadline is None or event.occurred_at <= enrollment.goal_deadline
    )


def enrollments_convert(
    *, enrollments: list[Enrollment], reason: str, now: datetime, converted_at: datetime | None = None
) -> None:
    """Exit enrollments as converted (at the goal event's time), cancelling what was pending (a wait,
    a deferred send)."""
    if not enrollments:
        return
    runs = [e.waiting_run_id for e in enrollments if e.waiting_run_id]
    messages = [e.wait_message_id for e in enrollments if e.waiting == Waiting.MESSAGE and e.wait_message_id]
    StepRun.objects.filter(pk__in=runs).update(
        status=StepRunStatus.CANCELLED, finished_at=now, detail="The recipient converted."
    )
    Enrollment.objects.filter(pk__in=[e.pk for e in enrollments]).update(
        status=EnrollmentStatus.CONVERTED,
        ended_at=now,
        converted_at=converted_at or now,
        next_run_at=None,
        waiting="",
        waiting_run=None,
        exit_reason=reason,
    )
    if messages:
        _enqueue("journeys.tasks.messages_cancel_task", messages, f"Cancelled: {reason}.")


def event_apply(*, event: Event, now: datetime, blocking: bool = False) -> list[int]:
    """React to a product event: enroll in journeys it triggers, convert on goals, wake waits.

    Runs inside the event's transaction (the signal). Enrollment rows being advanced by a scheduler batch
    right now are skipped rather than waited for (the event's insert holds the recipient's key lock, which
    the batch's governor call needs: waiting would deadlock); a follow-up task applies it to those
    (`blocking=True`). The scheduler also checks goals and awaited events itself before every step.
    """
    woken: list[int] = []
    # Triggers.
    if not blocking:
        for journey in Journey.objects.filter(
            status=JourneyStatus.ACTIVE, trigger_event=event.name
        ).select_related("live_version"):
            try:
                enrollment = enrollment_create(
                    journey=journey,
                    recipient=event.recipient,
                    now=now,
                    trigger=EnrollmentTrigger.EVENT,
                    event=event,
                )
            except EnrollmentRefused as exc:
                logger.debug("event %s does not enroll: %s", event.pk, exc.detail)
            else:
                woken.append(enrollment.pk)
    # Goals and awaited events of the recipient's active enrollments.
    relevant = Enrollment.objects.filter(
        recipient_id=event.recipient_id, status=EnrollmentStatus.ACTIVE
    ).filter(Q(version__definition__goal__event=event.name) | Q(waiting=Waiting.EVENT, wait_event=event.name))
    locked = list(
        relevant.select_for_update(skip_locked=not blocking, of=("self",))
        .select_related("version")
        .order_by("pk")
    )
    converted = [e for e in locked if _goal_reached(e, event)]
    enrollments_convert(
        enrollments=converted,
        reason=f"converted: {event.name} at {event.occurred_at:%Y-%m-%d %H:%M}",
        now=now,
        converted_at=event.occurred_at,
    )
    converted_ids = {e.pk for e in converted}
    wake = [
        e.pk
        for e in locked
        if e.pk not in converted_ids
        and e.waiting == Waiting.EVENT
        and e.wait_event == event.name
        and (e.step_started_at is None or event.occurred_at >= e.step_started_at)
    ]
    if wake:
        Enrollment.objects.filter(pk__in=wake).update(next_run_at=now)
        woken.extend(wake)
    if woken:
        _enqueue("journeys.tasks.enrollments_advance_task", woken)
    if not blocking and relevant.exclude(pk__in=[e.pk for e in locked]).exists():
        _enqueue("journeys.tasks.event_apply_task", event.pk)
    return woken


def event_reapply(*, event_id: int, now: datetime) -> list[int]:
    """The follow-up of `event_apply` for rows that were busy: waits for their locks this time."""
    event = Event.objects.select_related("recipient").filter(pk=event_id).first()
    if event is None:
        return []
    with transaction.atomic():
        return event_apply(event=event, now=now, blocking=True)


def message_wake(*, message_id: int, now: datetime) -> list[int]:
    """A journey message left `deferred`: wake the enrollment waiting for it (called from a task)."""
    with transaction.atomic():
        ids = list(
            Enrollment.objects.filter(
                status=EnrollmentStatus.ACTIVE, waiting=Waiting.MESSAGE, wait_message_id=message_id
            ).values_list("pk", flat=True)
        )
        Enrollment.objects.filter(pk__in=ids).update(next_run_at=now)
    return ids


def recipient_journeys_lock(*, recipient_id: int) -> None:
    """Lock the person's enrollments and campaign members (waiting for a batch in flight that holds one),
    for `orchestrator.erasure.recipient_erase` before it locks the recipient's row: the order in which
    the scheduler's and the campaigns' batches take their locks (theirs, then the governor's)."""
    from .models import CampaignRecipient

    for model in (Enrollment, CampaignRecipient):
        list(model.objects.select_for_update().filter(recipient_id=recipient_id).order_by("pk").values("pk"))


def recipient_erase_journeys(
    *, recipient: Recipient, identifiers: Iterable[str], at: datetime, counts: dict
) -> dict[str, Any]:
    """The journeys' share of `orchestrator.erasure.recipient_erase` (inside its transaction): active
    enrollments exit, pending campaign members are cancelled, free text loses the person's identifiers.
    Returns the event properties measurement reads (goal values, definitions' values and filters)."""
    from orchestrator.history import _scrubbed

    from .models import CampaignRecipient, ConversionDefinition, JourneyVersion, MemberState

    ids = list(identifiers)
    # One UPDATE per table, never two of the same row: PostgreSQL checks the foreign keys of a row this
    # transaction already changed again at commit (a key share lock on the journey, or on the campaign a
    # worker may hold while it waits for this recipient: a deadlock).
    enrollments = Enrollment.objects.filter(recipient=recipient)  # locked by recipient_journeys_lock
    active = Q(status=EnrollmentStatus.ACTIVE)
    counts["enrollments_stopped"] = enrollments.filter(active).count()
    counts["enrollments"] = enrollments.update(
        status=Case(When(active, then=Value(EnrollmentStatus.EXITED)), default=F("status")),
        exit_reason=Case(
            When(active, then=Value("recipient erased")),
            default=_scrubbed("exit_reason", ids),
            output_field=Enrollment._meta.get_field("exit_reason"),
        ),
        ended_at=Case(When(active, then=Value(at)), default=F("ended_at")),
        next_run_at=Case(When(active, then=Value(None)), default=F("next_run_at")),
        error=_scrubbed("error", ids),
    )
    counts["step_runs"] = StepRun.objects.filter(enrollment__recipient=recipient).update(
        detail=_scrubbed("detail", ids)
    )
    # Locked already (recipient_journeys_lock), like the enrollments: no batch holds one now.
    members = CampaignRecipient.objects.filter(recipient=recipient)
    pending = Q(state=MemberState.PENDING)
    counts["campaign_members_cancelled"] = members.filter(pending).count()
    counts["campaign_members"] = members.update(
        state=Case(When(pending, then=Value(MemberState.CANCELLED)), default=F("state")),
        detail=Case(
            When(pending, then=Value("recipient erased")),
            default=_scrubbed("detail", ids),
            output_field=CampaignRecipient._meta.get_field("detail"),
        ),
        decided_at=Case(When(pending, then=Value(at)), default=F("decided_at")),
    )
    numbers: set[str] = set()
    values: dict[str, list] = {}
    for definition in JourneyVersion.objects.values_list("definition", flat=True):
        value_key = ((definition or {}).get("goal") or {}).get("value_property")
        if value_key:
            numbers.add(str(value_key))
    for value_key, property_filter in ConversionDefinition.objects.values_list(
        "value_property", "property_filter"
    ):
        if value_key:
            numbers.add(value_key)
        for key, value in (property_filter or {}).items():
            values.setdefault(key, []).append(value)
    return {"keep_event_properties": {"numbers": sorted(numbers), "values": values}}
