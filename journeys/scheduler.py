"""The scheduler: claims due enrollments in batches (FOR UPDATE SKIP LOCKED) and advances each as far as
it can go now, set-based.

One batch is one transaction: the enrollments' rows stay locked until their StepRuns, Messages and new
positions commit together, so a second worker (or a duplicated task) either skips them or finds them no
longer due; the unique (enrollment, seq) StepRun is the backstop. A batch makes at most one call to the
send pipeline (`messages_send_bulk`, whose governor locks the recipients in id order), so two batches
cannot deadlock on recipients; an enrollment that reaches a second send in the same batch is left due for
the next round.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Min

from orchestrator.db import is_postgres
from orchestrator.models import (
    CLEARED_STATUSES,
    Event,
    Message,
    MessageStatus,
    Recipient,
    Source,
)
from orchestrator.pipeline import SendRefused, SendRequest, messages_send_bulk

from .definition import CompiledDefinition, CompiledStep, definition_compile, duration_format
from .models import (
    Enrollment,
    EnrollmentStatus,
    Journey,
    JourneyStatus,
    JourneyVersion,
    StepRun,
    StepRunStatus,
    Waiting,
)

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
# When a deferred journey send is still deferred at its deliver_after, look again this much later.
RECHECK_AFTER = timedelta(minutes=5)
# Steps one enrollment may run in one round (validation forbids loops without a wait; this is a fuse).
MAX_STEPS_PER_ROUND = 100
HELD_OUT_DETAIL = "Held out: in the journey's holdout, so nothing is sent (counted in its report)."

_compiled: dict[int, CompiledDefinition] = {}


def _settings_batch_size() -> int:
    return int(getattr(settings, "ORCHESTRATOR", {}).get("JOURNEY_BATCH_SIZE", BATCH_SIZE))


def version_compiled(*, version_id: int, definition: dict | None = None) -> CompiledDefinition:
    """Compiled definitions by version id (approved versions never change, so the cache stays valid)."""
    compiled = _compiled.get(version_id)
    if compiled is None:
        if definition is None:
            definition = JourneyVersion.objects.values_list("definition", flat=True).get(pk=version_id)
        compiled = _compiled[version_id] = definition_compile(definition)
    return compiled


@dataclass
class AdvanceResult:
    enrollments: int = 0
    steps: int = 0
    messages: int = 0
    batches: int = 0


@dataclass
class _Send:
    enrollment: Enrollment
    step: CompiledStep
    refusal: str = ""


@dataclass
class _Batch:
    now: datetime
    slugs: dict[int, str]
    events: dict[int, list[tuple[str, datetime]]]
    messages: dict[int, dict]
    new_runs: list[tuple[Enrollment, StepRun, bool]] = field(default_factory=list)
    run_updates: dict[int, tuple[str, str, int | None]] = field(default_factory=dict)
    sends: list[_Send] = field(default_factory=list)
    cancel_messages: list[int] = field(default_factory=list)
    steps: int = 0
    errored: int = 0
    broken: dict[int, str] = field(default_factory=dict)  # version id -> why it cannot be compiled


def enrollments_advance_due(*, now: datetime, limit: int) -> int:
    """Due-work entry point (settings.ORCHESTRATOR["DUE_WORK"]): advance up to `limit` due enrollments."""
    return enrollments_advance(now=now, limit=limit).enrollments


def enrollments_advance(
    *, now: datetime, limit: int = 10_000, ids: list[int] | None = None, batch_size: int | None = None
) -> AdvanceResult:
    """Claim due enrollments batch by batch and advance them; stops at `limit` or when none is due."""
    result = AdvanceResult()
    size = batch_size or _settings_batch_size()
    # Paused (or not yet active) journeys hold their enrollments. Filtering on the few active journey ids
    # instead of joining lets the claim walk the (next_run_at, id) index in order and stop at the limit.
    journeys = list(Journey.objects.filter(status=JourneyStatus.ACTIVE).values_list("pk", flat=True))
    while result.enrollments < limit and journeys:
        claimed: list[int] = []
        try:
            with transaction.atomic():
                qs = Enrollment.objects.filter(
                    status=EnrollmentStatus.ACTIVE, next_run_at__lte=now, journey_id__in=journeys
                )
                if ids is not None:
                    qs = qs.filter(pk__in=ids)
                batch = list(
                    qs.select_for_update(skip_locked=True, of=("self",)).order_by("next_run_at", "pk")[
                        : min(size, limit - result.enrollments)
                    ]
                )
                if not batch:
                    break
                claimed = [e.pk for e in batch]
                steps, messages = _batch_advance(batch, now)
        except (OperationalError, InterfaceError):
            raise  # the database is away: nothing is wrong with the rows, the next pass retries them
        except Exception:
            if not claimed:
                raise
            # One row broke the batch's transaction (a column overflow, a bad definition...): run its
            # enrollments one by one, so only the guilty one is marked errored and the rest advance.
            logger.exception("journey batch of %s failed; advancing its enrollments one by one", len(claimed))
            steps, messages = _one_by_one(claimed, now)
        result.enrollments += len(claimed)
        result.steps += steps
        result.messages += messages
        result.batches += 1
    return result


def _one_by_one(ids: list[int], now: datetime) -> tuple[int, int]:
    steps = messages = 0
    for pk in ids:
        try:
            with transaction.atomic():
                batch = list(
                    Enrollment.objects.select_for_update(skip_locked=True, of=("self",)).filter(
                        pk=pk, status=EnrollmentStatus.ACTIVE, next_run_at__lte=now
                    )
                )
                if batch:
                    s, m = _batch_advance(batch, now)
                    steps, messages = steps + s, messages + m
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            logger.exception("enrollment %s failed to advance; marked errored", pk)
            enrollment_error(enrollment_id=pk, reason=_error_text(exc), now=now)
    return steps, messages


def _error_text(exc: BaseException, step_id: str = "") -> str:
    where = f"step {step_id!r}: " if step_id else ""
    return f"{where}{type(exc).__name__}: {exc}"[:2000]


def enrollment_error(*, enrollment_id: int, reason: str, now: datetime) -> bool:
    """Stop an active enrollment that cannot advance: status errored, the reason kept, its waiting step
    run closed. Its own transaction, so it sticks even though the batch that hit the error rolled back."""
    with transaction.atomic():
        e = Enrollment.objects.select_for_update().filter(pk=enrollment_id, status=EnrollmentStatus.ACTIVE)
        e = e.first()
        if e is None:
            return False
        if e.waiting_run_id:
            detail = f"Stopped by an error: {reason}"[:2000]
            StepRun.objects.filter(pk=e.waiting_run_id).update(
                status=StepRunStatus.CANCELLED, finished_at=now, detail=detail
            )
        Enrollment.objects.filter(pk=e.pk).update(
            status=EnrollmentStatus.ERRORED,
            error=reason,
            exit_reason=f"error: {reason}"[:300],
            ended_at=now,
            next_run_at=None,
            waiting=Waiting.NOTHING,
            waiting_run=None,
        )
    return True


def _snapshot_names() -> list[str]:
    return [name for name, _ in _ENROLLMENT_COLUMNS]


@contextmanager
def _isolated(e: Enrollment, b: _Batch) -> Iterator[None]:
    """Run one enrollment's state machine; if it raises, undo its part of the batch and mark it errored
    (the batch's other enrollments go on). Database errors are not caught here: they abort the whole
    transaction, and enrollments_advance then retries the batch one enrollment at a time."""
    saved = {name: getattr(e, name) for name in _snapshot_names()}
    marks = (len(b.new_runs), len(b.sends), len(b.cancel_messages), b.steps)
    run_key = e.waiting_run_id
    run_update = b.run_updates.get(run_key)
    try:
        yield
    except DatabaseError:
        raise
    except Exception as exc:
        logger.exception("enrollment %s failed at step %r; marked errored", e.pk, saved["step_id"])
        for name, value in saved.items():
            setattr(e, name, value)
        del b.new_runs[marks[0] :], b.sends[marks[1] :], b.cancel_messages[marks[2] :]
        b.steps = marks[3]
        if run_update is None:
            b.run_updates.pop(run_key, None)
        else:
            b.run_updates[run_key] = run_update
        _errored(e, b, _error_text(exc, saved["step_id"]))


def _errored(e: Enrollment, b: _Batch, reason: str) -> None:
    if e.waiting_run_id:
        b.run_updates[e.waiting_run_id] = (StepRunStatus.CANCELLED, f"Stopped by an error: {reason}", None)
    e.waiting_run_id = None
    _end(e, b, EnrollmentStatus.ERRORED, f"error: {reason}"[:300])
    e.error = reason
    b.errored += 1


def _batch_advance(batch: list[Enrollment], now: datetime) -> tuple[int, int]:
    version_ids = {e.version_id for e in batch}
    missing = [v for v in version_ids if v not in _compiled]
    broken: dict[int, str] = {}
    for vid, definition in JourneyVersion.objects.filter(pk__in=missing).values_list("pk", "definition"):
        try:
            version_compiled(version_id=vid, definition=definition)
        except Exception as exc:  # noqa: BLE001 - only its enrollments stop; the batch goes on
            broken[vid] = f"its journey version cannot be run ({type(exc).__name__}: {exc})"
    everyone, batch = batch, [e for e in batch if e.version_id not in broken]
    slugs = dict(Journey.objects.filter(pk__in={e.journey_id for e in batch}).values_list("pk", "slug"))

    # Events that may convert or end a wait: one query for the batch.
    names = set()
    for e in batch:
        d = _compiled[e.version_id]
        if d.goal_event:
            names.add(d.goal_event)
        if e.waiting == Waiting.EVENT:
            names.add(e.wait_event)
    events: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    if names:
        since = min(e.entered_at for e in batch)
        for rid, name, at in Event.objects.filter(
            recipient_id__in={e.recipient_id for e in batch}, name__in=names, occurred_at__gte=since
        ).values_list("recipient_id", "name", "occurred_at"):
            events[rid].append((name, at))
    waited = [e.wait_message_id for e in batch if e.waiting == Waiting.MESSAGE and e.wait_message_id]
    messages = {
        m["id"]: m
        for m in Message.objects.filter(pk__in=waited).values(
            "id", "status", "deliver_after", "reason", "channel"
        )
    }
    b = _Batch(now=now, slugs=slugs, events=events, messages=messages, broken=broken)
    for e in everyone:
        if e.version_id in broken:
            _errored(e, b, broken[e.version_id])

    # Each enrollment's state machine runs isolated: one that raises is marked errored with the reason
    # and the others advance (an overflowing wait must not stall every journey).
    for e in batch:
        with _isolated(e, b):
            _resume(e, b)
    sends = list(b.sends)
    b.sends.clear()
    decided = _sends_decide(sends, b)
    for send, message in decided:
        with _isolated(send.enrollment, b):
            _send_record(send, message, b)
            if send.enrollment.status == EnrollmentStatus.ACTIVE and not send.enrollment.waiting:
                _walk(send.enrollment, b, allow_send=False)

    _write(everyone, b)
    if b.cancel_messages:
        from .services import _enqueue

        _enqueue(
            "journeys.tasks.messages_cancel_task", b.cancel_messages, "Cancelled: the recipient converted."
        )
    return b.steps, sum(1 for _, m in decided if m is not None)


# --- the state machine ------------------------------------------------------------------------------


def _goal_event_at(e: Enrollment, d: CompiledDefinition, b: _Batch) -> datetime | None:
    for name, at in b.events.get(e.recipient_id, ()):
        if name == d.goal_event and at >= e.entered_at and (e.goal_deadline is None or at <= e.goal_deadline):
            return at
    return None


def _run_new(
    e: Enrollment,
    step: CompiledStep,
    b: _Batch,
    status: str,
    detail: str = "",
    *,
    waits: bool = False,
    message_id: int | None = None,
) -> StepRun:
    run = StepRun(
        enrollment_id=e.pk,
        seq=e.seq,
        step_id=step.id,
        step_type=step.type,
        status=status,
        detail=detail,
        message_id=message_id,
        started_at=b.now,
        finished_at=None if waits else b.now,
    )
    e.seq += 1
    b.new_runs.append((e, run, waits))
    b.steps += 1
    return run


def _run_finish(e: Enrollment, b: _Batch, status: str, detail: str, message_id: int | None = None) -> None:
    if e.waiting_run_id:
        b.run_updates[e.waiting_run_id] = (status, detail, message_id)
    else:  # the waiting run was created in this batch (not yet saved)
        for owner, run, _ in reversed(b.new_runs):
            if owner is e and run.finished_at is None:
                run.status, run.detail, run.finished_at = status, detail, b.now
                run.message_id = message_id or run.message_id
                break
    e.waiting_run_id = None
    e.waiting = Waiting.NOTHING
    e.wait_event = ""
    b.steps += 1


def _end(e: Enrollment, b: _Batch, status: str, reason: str) -> None:
    e.status = status
    e.ended_at = b.now
    e.next_run_at = None
    e.waiting = Waiting.NOTHING
    e.exit_reason = reason[:300]  # the column; a governor reason inside it can be long


def _next(e: Enrollment, d: CompiledDefinition) -> None:
    e.step_id = d.steps[e.step_id].next_id


def _resume(e: Enrollment, b: _Batch) -> None:
    """Settle what the enrollment was waiting for, then walk on."""
    d = _compiled[e.version_id]
    if d.goal_event:
        at = _goal_event_at(e, d, b)
        if at is not None:
            if e.waiting == Waiting.MESSAGE and e.wait_message_id:
                b.cancel_messages.append(e.wait_message_id)
            if e.waiting:
                _run_finish(e, b, StepRunStatus.CANCELLED, "The recipient converted.")
                b.steps -= 1
            _end(e, b, EnrollmentStatus.CONVERTED, f"converted: {d.goal_event} at {at:%Y-%m-%d %H:%M}")
            e.converted_at = at
            return
    step = d.steps.get(e.step_id)
    if e.waiting == Waiting.TIME:
        _run_finish(e, b, StepRunStatus.DONE, f"Waited {duration_format(step.duration)}.")
        _next(e, d)
    elif e.waiting == Waiting.EVENT:
        seen = [
            at
            for name, at in b.events.get(e.recipient_id, ())
            if name == e.wait_event and at >= e.step_started_at
        ]
        if seen:
            _run_finish(e, b, StepRunStatus.DONE, f"{e.wait_event} at {min(seen):%Y-%m-%d %H:%M}.")
            _next(e, d)
        elif e.step_started_at + step.timeout <= b.now:
            _run_finish(
                e, b, StepRunStatus.DONE, f"No {e.wait_event} within {duration_format(step.timeout)}."
            )
            if step.raw.get("on_timeout") == "exit":
                _end(e, b, EnrollmentStatus.EXITED, f"timed out waiting for {step.raw.get('event')}")
                return
            _next(e, d)
        else:  # woken too early (a stale wake): keep waiting until the timeout
            e.next_run_at = e.step_started_at + step.timeout
            return
    elif e.waiting == Waiting.MESSAGE:
        m = b.messages.get(e.wait_message_id)
        if m is not None and m["status"] == MessageStatus.DEFERRED:
            after = m["deliver_after"] or b.now
            e.next_run_at = after if after > b.now else b.now + RECHECK_AFTER
            return
        if m is not None and m["status"] in CLEARED_STATUSES:
            _run_finish(e, b, StepRunStatus.SENT, "Released by the governor.", m["id"])
            e.last_message_id = m["id"]
            e.channels_used = [*e.channels_used, m["channel"]]
        else:
            reason = (m or {}).get("reason") or "the message is gone"
            _run_finish(e, b, StepRunStatus.SKIPPED, f"{(m or {}).get('status', 'missing')}: {reason}")
            if step.raw.get("on_suppressed") == "exit":
                _end(e, b, EnrollmentStatus.EXITED, f"send {step.id} was not delivered ({reason})")
                return
        e.wait_message_id = None
        _next(e, d)
    _walk(e, b, allow_send=True)


def _walk(e: Enrollment, b: _Batch, *, allow_send: bool) -> None:
    """Run steps until the enrollment must wait, has sent (its result comes from the governor), or ends."""
    d = _compiled[e.version_id]
    for _ in range(MAX_STEPS_PER_ROUND):
        if e.status != EnrollmentStatus.ACTIVE:
            return
        if not e.step_id:
            _end(e, b, EnrollmentStatus.EXITED, "completed every step")
            return
        step = d.steps[e.step_id]
        e.step_started_at = b.now
        if step.type == "send":
            if e.held_out:  # the journey's holdout: no send is built; the run goes on and is measured
                _run_new(e, step, b, StepRunStatus.SKIPPED, HELD_OUT_DETAIL)
                e.step_id = step.next_id
                continue
            if not allow_send:
                e.next_run_at = b.now  # one governor call per batch: the next round sends it
                return
            b.sends.append(_Send(e, step))
            return
        if step.type == "wait":
            _run_new(
                e,
                step,
                b,
                StepRunStatus.WAITING,
                f"Until {b.now + step.duration:%Y-%m-%d %H:%M}.",
                waits=True,
            )
            e.waiting = Waiting.TIME
            e.next_run_at = b.now + step.duration
            return
        if step.type == "wait_for_event":
            _run_new(e, step, b, StepRunStatus.WAITING, f"Waiting for {step.raw['event']}.", waits=True)
            e.waiting = Waiting.EVENT
            e.wait_event = step.raw["event"]
            e.next_run_at = b.now + step.timeout
            return
        if step.type == "branch":
            taken, why = _branch(e, d, step, b)
            target = step.raw["then"] if taken else (step.raw.get("else") or step.next_id)
            _run_new(e, step, b, StepRunStatus.DONE, f"{why} → {target or 'end'}")
            e.step_id = target
            continue
        if step.type == "exit":
            _run_new(e, step, b, StepRunStatus.DONE, "Exit step.")
            _end(e, b, EnrollmentStatus.EXITED, f"reached exit step {step.id}")
            return
    logger.error("enrollment %s ran %s steps in one round; parked", e.pk, MAX_STEPS_PER_ROUND)
    e.next_run_at = b.now + RECHECK_AFTER


def _branch(e: Enrollment, d: CompiledDefinition, step: CompiledStep, b: _Batch) -> tuple[bool, str]:
    cond = step.raw["if"]
    if cond == "converted":
        hit = (
            d.goal_event
            and Event.objects.filter(
                recipient_id=e.recipient_id, name=d.goal_event, occurred_at__gte=e.entered_at
            ).exists()
        )
        return bool(hit), f"converted: {'yes' if hit else 'no'}"
    if cond == "engaged":
        status = (
            Message.objects.filter(pk=e.last_message_id).values_list("status", flat=True).first()
            if e.last_message_id
            else None
        )
        hit = status in (MessageStatus.OPENED, MessageStatus.CLICKED)
        return hit, f"previous send {status or 'none'}: {'engaged' if hit else 'not engaged'}"
    attrs = Recipient.objects.filter(pk=e.recipient_id).values_list("attributes", flat=True).first() or {}
    value = attrs.get(cond["attribute"])
    hit = value == cond["equals"]
    return hit, f"{cond['attribute']} = {value!r}: {'match' if hit else 'no match'}"


# --- sends, set-based ---------------------------------------------------------------------------------


def _template_contexts(sends: list[_Send], b: _Batch) -> dict[int, dict]:
    """What a templated send step may read besides the recipient: {{ journey.* }} and the event that
    triggered the enrollment ({{ event.* }}); one query each for the batch."""
    if not sends:
        return {}
    names = dict(
        Journey.objects.filter(pk__in={s.enrollment.journey_id for s in sends}).values_list("pk", "name")
    )
    events = {
        pk: {"name": name, "properties": properties, "occurred_at": occurred_at.isoformat()}
        for pk, name, properties, occurred_at in Event.objects.filter(
            pk__in={s.enrollment.trigger_event_id for s in sends if s.enrollment.trigger_event_id}
        ).values_list("pk", "name", "properties", "occurred_at")
    }
    return {
        id(s): {
            "journey": {
                "slug": b.slugs[s.enrollment.journey_id],
                "name": names.get(s.enrollment.journey_id, ""),
                "step": s.step.id,
            },
            "event": events.get(s.enrollment.trigger_event_id, {}),
        }
        for s in sends
    }


def _sends_decide(sends: list[_Send], b: _Batch) -> list[tuple[_Send, Message | None]]:
    """Map each send step to a request for the one send pipeline, all in ONE call for the batch (validation,
    `auto` choice, lint, shelf life, the governor and the delivery hand-off happen there, as for any source).
    A refusal skips that step with its code and reason."""
    if not sends:
        return []
    contexts = _template_contexts([s for s in sends if s.step.raw.get("template")], b)
    requests = []
    for s in sends:
        e, step = s.enrollment, s.step
        raw = step.raw
        requests.append(
            SendRequest(
                recipient_id=e.recipient_id,
                channel=raw["channel"],
                purpose=raw.get("purpose", "engagement"),
                content=raw.get("content"),
                template=raw.get("template"),
                data=raw.get("data"),
                context=contexts.get(id(s)),
                priority=int(raw.get("priority", 50)),
                expires_at=b.now + step.expires_after if step.expires_after else None,
                source=Source.JOURNEY,
                source_ref=f"{b.slugs[e.journey_id]} · {step.id}",
                avoid_channels=frozenset(e.channels_used),
            )
        )
    decided = []
    for s, result in zip(sends, messages_send_bulk(requests=requests, at=b.now), strict=True):
        if isinstance(result, SendRefused):
            errors = [e for errs in result.errors.values() for e in errs]
            s.refusal = "; ".join(f"{e['code']}: {e['detail']}" for e in errors)
            decided.append((s, None))
        else:
            decided.append((s, result))
    return decided


def _send_record(send: _Send, message: Message | None, b: _Batch) -> None:
    e, step = send.enrollment, send.step
    d = _compiled[e.version_id]
    if message is None:
        _run_new(e, step, b, StepRunStatus.SKIPPED, f"Not sent: {send.refusal.rstrip('.')}.")
        outcome = "skipped"
    elif message.status == MessageStatus.DEFERRED:
        _run_new(
            e,
            step,
            b,
            StepRunStatus.DEFERRED,
            f"Deferred until {message.deliver_after:%Y-%m-%d %H:%M}: {message.reason}"
            if message.deliver_after
            else f"Deferred: {message.reason}",
            waits=True,
            message_id=message.pk,
        )
        e.waiting = Waiting.MESSAGE
        e.wait_message_id = message.pk
        e.last_message_id = message.pk
        after = message.deliver_after or b.now
        e.next_run_at = after if after > b.now else b.now + RECHECK_AFTER
        return
    elif message.status in CLEARED_STATUSES:
        _run_new(
            e, step, b, StepRunStatus.SENT, f"{message.channel}: {message.status}.", message_id=message.pk
        )
        e.last_message_id = message.pk
        e.channels_used = [*e.channels_used, message.channel]
        outcome = "sent"
    else:  # suppressed or expired
        _run_new(
            e, step, b, StepRunStatus.SKIPPED, f"{message.status}: {message.reason}", message_id=message.pk
        )
        outcome = "skipped"
    if outcome == "skipped" and step.raw.get("on_suppressed") == "exit":
        _end(e, b, EnrollmentStatus.EXITED, f"send {step.id} was not sent")
        return
    e.step_id = d.steps[e.step_id].next_id


# --- writing the batch ------------------------------------------------------------------------------

_ENROLLMENT_COLUMNS = [
    ("status", "varchar"),
    ("error", "text"),
    ("step_id", "varchar"),
    ("seq", "integer"),
    ("waiting", "varchar"),
    ("wait_event", "varchar"),
    ("waiting_run_id", "bigint"),
    ("wait_message_id", "bigint"),
    ("last_message_id", "bigint"),
    ("channels_used", "jsonb"),
    ("step_started_at", "timestamptz"),
    ("next_run_at", "timestamptz"),
    ("ended_at", "timestamptz"),
    ("exit_reason", "varchar"),
    ("converted_at", "timestamptz"),
]
_STEPRUN_COLUMNS = [
    ("enrollment_id", "bigint"),
    ("seq", "integer"),
    ("step_id", "varchar"),
    ("step_type", "varchar"),
    ("status", "varchar"),
    ("message_id", "bigint"),
    ("detail", "text"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
]


def _column(values: list, kind: str) -> list:
    """Arrays travel as text where psycopg would quote each element slowly (timestamps, JSON)."""
    if kind == "timestamptz":
        return [v.isoformat() if v is not None else None for v in values]
    if kind == "jsonb":
        return [json.dumps(v) for v in values]
    return values


def _unnest(columns: list[tuple[str, str]]) -> tuple[str, str]:
    """`unnest(%s::t1[], ...)` over text-encoded arrays, and the select list casting them back."""
    arrays = ", ".join(f"%s::{'text' if kind in ('timestamptz', 'jsonb') else kind}[]" for _, kind in columns)
    select = ", ".join(
        f"v.{name}::{kind}" if kind in ("timestamptz", "jsonb") else f"v.{name}" for name, kind in columns
    )
    return arrays, select


STEPRUN_TABLE = StepRun._meta.db_table
ENROLLMENT_TABLE = Enrollment._meta.db_table


def _write(batch: list[Enrollment], b: _Batch) -> None:
    """Insert the new StepRuns, finish the settled ones and save the enrollments: three statements."""
    if b.new_runs:
        steprun_insert_many(new_runs=b.new_runs)
    if b.run_updates:
        steprun_finish_many(updates=b.run_updates, now=b.now)
    enrollments_save_many(enrollments=batch)


def steprun_insert_many(*, new_runs: list[tuple[Enrollment, StepRun, bool]]) -> None:
    """Insert StepRuns (one unnest INSERT on PostgreSQL, bulk_create elsewhere); a waiting run becomes its
    enrollment's `waiting_run`. A duplicate (enrollment, seq) raises and rolls the whole batch back,
    messages included."""
    runs = [run for _, run, _ in new_runs]
    if is_postgres():
        arrays, select = _unnest(_STEPRUN_COLUMNS)
        names = ", ".join(name for name, _ in _STEPRUN_COLUMNS)
        with connection.cursor() as cur:
            cur.execute(
                f"INSERT INTO {STEPRUN_TABLE} ({names}) SELECT {select} "
                f"FROM unnest({arrays}) WITH ORDINALITY AS v({names}, n) ORDER BY v.n RETURNING id",
                [_column([getattr(r, name) for r in runs], kind) for name, kind in _STEPRUN_COLUMNS],
            )
            ids = [row[0] for row in cur.fetchall()]
    else:
        ids = [run.pk for run in StepRun.objects.bulk_create(runs)]
    for (e, run, waits), pk in zip(new_runs, ids, strict=True):
        run.pk = pk
        if waits and run.finished_at is None:
            e.waiting_run_id = pk


def steprun_finish_many(*, updates: dict[int, tuple[str, str, int | None]], now: datetime) -> None:
    """Finish waiting StepRuns: run id → (status, detail, message id or None to keep it)."""
    ids = list(updates)
    if not is_postgres():
        for run_id, (status, detail, message_id) in updates.items():
            fields = {"status": status, "detail": detail, "finished_at": now}
            if message_id is not None:
                fields["message_id"] = message_id
            StepRun.objects.filter(pk=run_id).update(**fields)
        return
    with connection.cursor() as cur:
        cur.execute(
            f"""
            UPDATE {STEPRUN_TABLE} r
               SET status = v.status, detail = v.detail, finished_at = %s,
                   message_id = COALESCE(v.message_id, r.message_id)
              FROM unnest(%s::bigint[], %s::varchar[], %s::text[], %s::bigint[])
                   AS v(id, status, detail, message_id)
             WHERE r.id = v.id
            """,
            [
                now,
                ids,
                [updates[i][0] for i in ids],
                [updates[i][1] for i in ids],
                [updates[i][2] for i in ids],
            ],
        )


def enrollments_save_many(*, enrollments: list[Enrollment]) -> None:
    """Save the enrollments' positions (one unnest UPDATE on PostgreSQL, bulk_update elsewhere)."""
    if not is_postgres():
        Enrollment.objects.bulk_update(enrollments, [name for name, _ in _ENROLLMENT_COLUMNS])
        return
    columns = [("id", "bigint"), *_ENROLLMENT_COLUMNS]
    arrays, _ = _unnest(columns)
    sets = ", ".join(
        f"{name} = v.{name}::{kind}" if kind in ("timestamptz", "jsonb") else f"{name} = v.{name}"
        for name, kind in _ENROLLMENT_COLUMNS
    )
    names = ", ".join(name for name, _ in columns)
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {ENROLLMENT_TABLE} e SET {sets} FROM unnest({arrays}) AS v({names}) WHERE e.id = v.id",
            [
                _column([getattr(e, name) if name != "id" else e.pk for e in enrollments], kind)
                for name, kind in columns
            ],
        )


def enrollments_advance_for_message(*, message_id: int, now: datetime) -> int:
    """Wake the enrollment waiting for this (no longer deferred) message and advance it now."""
    from .services import message_wake

    ids = message_wake(message_id=message_id, now=now)
    return enrollments_advance(now=now, ids=ids).enrollments if ids else 0


def enrollments_due_count(*, now: datetime) -> int:
    """How many active enrollments are due (for the admin and the bench)."""
    return Enrollment.objects.filter(status=EnrollmentStatus.ACTIVE, next_run_at__lte=now).count()


def enrollments_next_due(*, now: datetime) -> datetime | None:
    return Enrollment.objects.filter(status=EnrollmentStatus.ACTIVE).aggregate(t=Min("next_run_at"))["t"]
