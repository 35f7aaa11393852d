"""Delivery: every accepted message reaches its provider once, transient errors retry, failures stay.

The flow (`messages_deliver`, run by a thin django-q2 task with a batch of ids):
1. claim — a short transaction per chunk of ids: lock the messages (SKIP LOCKED), keep those still
   accepted and due, write an `in_progress` DeliveryAttempt for each. A duplicate task finds the lock
   or the claim and does nothing.
2. send — the backend call for one message, outside any transaction.
3. record — a second short transaction for that message: the attempt's outcome and the message's new status
   (sent; a retry time with backoff and jitter; or failed, the dead letter).

PostgreSQL is the record and django-q2 only the transport: `deliveries_sweep` (due work) re-drives
accepted messages whose task was lost, whose retry is due, or whose claim outlived its lease.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from orchestrator.history import message_status_move
from orchestrator.models import Message, MessageStatus
from orchestrator.selectors import contact_points_reachable

from .backends import BaseBackend, Outgoing, SendResult, backend_for_channel
from .models import AttemptOutcome, DeliveryAttempt

logger = logging.getLogger(__name__)

TASK = "channels_app.tasks.messages_deliver_task"


# Fallbacks for knobs a deployment's CHANNELS setting may not name.
DEFAULTS = {
    "CLAIM_CHUNK": 10,
    "TASK_TIME_BUDGET": timedelta(seconds=30),
    "TASK_BATCH_SIZE": 50,
}


def conf(name: str):
    return settings.CHANNELS[name] if name in settings.CHANNELS else DEFAULTS[name]


# --- enqueueing ---------------------------------------------------------------------------------------


def message_deliver_enqueue(*, message_id: int) -> None:
    """Hand an accepted message to the delivery transport (called on commit)."""
    async_task(TASK, [message_id], task_name=f"deliver message {message_id}", group="delivery")


def messages_deliver_enqueue(*, message_ids: Iterable[int]) -> None:
    """Hand many accepted messages to the transport in batches (not one task per row)."""
    ids = list(message_ids)
    size = max(1, conf("TASK_BATCH_SIZE"))
    for start in range(0, len(ids), size):
        batch = ids[start : start + size]
        async_task(TASK, batch, task_name=f"deliver {len(batch)} messages from {batch[0]}", group="delivery")


# --- one delivery -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    attempt_id: int
    number: int
    backend_path: str
    provider: str
    started_at: datetime
    outgoing: Outgoing


def retry_delay(*, attempts: int, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with jitter after `attempts` tries: base·2^(n-1), capped, ±jitter."""
    base, cap, jitter = conf("RETRY_BASE_DELAY"), conf("RETRY_MAX_DELAY"), conf("RETRY_JITTER")
    delay = min(base * (2 ** max(0, attempts - 1)), cap)
    return delay * (rng or random).uniform(1 - jitter, 1 + jitter)


def _contact_addresses(messages: list[Message]) -> dict[int, str]:
    """Where each message goes: its named contact point, else its channel's newest reachable one.
    Messages whose contact point is gone are missing from the result. One query for the batch."""
    reachable = contact_points_reachable(recipient_ids={m.recipient_id for m in messages})
    found = {}
    for m in messages:
        candidates = reachable.get(m.recipient_id, {}).get(m.channel, [])
        if m.to_address:
            candidates = [a for a in candidates if a == m.to_address]
        if candidates:
            found[m.pk] = candidates[0]
    return found


def _fail(message: Message, *, error: str, at: datetime) -> None:
    message.last_error = error
    message.next_attempt_at = None
    message_status_move(
        message=message, status=MessageStatus.FAILED, at=at, update_fields=["last_error", "next_attempt_at"]
    )


def _backend_name(channel: str) -> str:
    """The backend's name for the record; a backend that cannot even be loaded is named by its path
    (its send then fails as transient and, retries exhausted, the message ends in the dead letter)."""
    try:
        return backend_for_channel(channel=channel).name
    except Exception:  # noqa: BLE001 - a misconfigured backend must not lose the message
        logger.exception("cannot load the %s backend", channel)
        return f"unloadable:{settings.CHANNELS['BACKENDS'].get(channel, '?')}"[:100]


def deliveries_claim(*, message_ids: Iterable[int], now: datetime) -> list[Claim]:
    """Claim each message that is accepted and due for one provider call, in one short transaction.

    Rows another worker holds are skipped (SKIP LOCKED); a message with a live claim or a retry not yet
    due is left alone (a duplicate task); a claim older than the lease is closed as lost and replaced.
    Expired messages become expired and unreachable ones failed here, without a provider call.
    """
    lease = conf("DELIVERY_LEASE")
    with transaction.atomic():
        messages = list(
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=list(message_ids), status=MessageStatus.ACCEPTED)
            .select_related("recipient")
            .order_by("pk")
        )
        if not messages:
            return []
        # The latest attempt per message (at most RETRY_MAX_ATTEMPTS each): later numbers overwrite
        # earlier ones. Portable, unlike DISTINCT ON, so delivery works on make run's SQLite too.
        last_attempts = {
            a.message_id: a
            for a in DeliveryAttempt.objects.filter(message__in=messages).order_by("message_id", "number")
        }
        addresses = _contact_addresses(messages)
        claimable: list[tuple[Message, int]] = []
        for message in messages:
            last = last_attempts.get(message.pk)
            if last is not None and last.outcome == AttemptOutcome.IN_PROGRESS:
                if last.started_at > now - lease:
                    continue  # a live claim: this is a duplicate task
                last.outcome = AttemptOutcome.TRANSIENT
                last.finished_at = now
                last.response = "No result within the lease (worker lost?); outcome unknown."
                last.save(update_fields=["outcome", "finished_at", "response"])
                if message.attempts >= conf("RETRY_MAX_ATTEMPTS"):
                    _fail(
                        message, error=f"Gave up after {message.attempts} attempts; {last.response}", at=now
                    )
                    continue
            elif (
                last is not None
                and last.outcome == AttemptOutcome.TRANSIENT
                and last.retry_at
                and last.retry_at > now
            ):
                continue  # an early duplicate: the retry is not due yet
            if message.expires_at is not None and message.expires_at <= now:
                message.next_attempt_at = None
                message.last_error = message.last_error or "Expired before it could be delivered."
                message_status_move(
                    message=message,
                    status=MessageStatus.EXPIRED,
                    at=now,
                    update_fields=["next_attempt_at", "last_error"],
                )
                continue
            if message.pk not in addresses:
                wanted = f" {message.to_address!r}" if message.to_address else ""
                who = message.recipient.external_id
                _fail(
                    message, error=f"{who} has no opted-in {message.channel} contact point{wanted}.", at=now
                )
                continue
            claimable.append((message, (last.number if last else 0) + 1))
        if not claimable:
            return []
        names = {ch: _backend_name(ch) for ch in {m.channel for m, _ in claimable}}
        attempts = DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    message=m,
                    number=n,
                    provider=names[m.channel],
                    started_at=now,
                    outcome=AttemptOutcome.IN_PROGRESS,
                )
                for m, n in claimable
            ]
        )
        Message.objects.filter(pk__in=[m.pk for m, _ in claimable]).update(
            attempts=F("attempts") + 1, next_attempt_at=now + lease, updated_at=now
        )
        return [
            Claim(
                attempt_id=attempt.pk,
                number=n,
                backend_path=conf("BACKENDS")[m.channel],
                provider=names[m.channel],
                started_at=now,
                outgoing=Outgoing(
                    message_id=m.pk,
                    channel=m.channel,
                    purpose=m.purpose,
                    recipient=m.recipient.external_id,
                    to=addresses[m.pk],
                    content=dict(m.content or {}),
                    expires_at=m.expires_at,
                ),
            )
            for (m, n), attempt in zip(claimable, attempts, strict=True)
        ]


def delivery_claim(*, message_id: int, now: datetime) -> Claim | None:
    """Claim one message for one provider call, or None if there is nothing (more) to do now."""
    claims = deliveries_claim(message_ids=[message_id], now=now)
    return claims[0] if claims else None


def delivery_record(*, claim: Claim, result: SendResult, now: datetime) -> Message:
    """Record the provider's answer on the attempt and move the message on (second short transaction)."""
    retry_at = None
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=claim.outgoing.message_id)
        message.provider = claim.provider
        if message.status != MessageStatus.ACCEPTED:
            # A receipt got here first (delivered before we heard back) or an operator acted: record the
            # attempt, fill in what the provider told us, and leave the status where it is.
            if result.outcome == AttemptOutcome.SUCCESS:
                message.provider_message_id = result.provider_message_id[:255]
                message.sent_at = message.sent_at or now
                message.next_attempt_at = None
                message.save(
                    update_fields=[
                        "provider",
                        "provider_message_id",
                        "sent_at",
                        "next_attempt_at",
                        "updated_at",
                    ]
                )
        elif result.outcome == AttemptOutcome.SUCCESS:
            message.provider_message_id = result.provider_message_id[:255]
            message.next_attempt_at = None
            message.last_error = ""
            message_status_move(
                message=message,
                status=MessageStatus.SENT,
                at=now,
                update_fields=["provider", "provider_message_id", "next_attempt_at", "last_error"],
            )
        elif result.outcome == AttemptOutcome.TRANSIENT and message.attempts < conf("RETRY_MAX_ATTEMPTS"):
            retry_at = now + retry_delay(attempts=message.attempts)
            message.next_attempt_at = retry_at
            message.last_error = result.summary
            message.save(update_fields=["provider", "next_attempt_at", "last_error", "updated_at"])
        else:
            if result.outcome == AttemptOutcome.TRANSIENT:
                error = f"Gave up after {message.attempts} attempts; last error: {result.summary}"
            else:
                error = result.summary
            message.save(update_fields=["provider"])
            _fail(message, error=error, at=now)
        DeliveryAttempt.objects.filter(pk=claim.attempt_id).update(
            outcome=result.outcome,
            finished_at=now,
            provider_message_id=result.provider_message_id[:255],
            response=result.summary[:2000],
            retry_at=retry_at,
        )
        return message


def _send(claim: Claim, backends: dict[str, BaseBackend]) -> SendResult:
    """The provider call (outside any transaction); a backend that raises counts as transient."""
    channel = claim.outgoing.channel
    try:
        backend = backends.get(channel) or backends.setdefault(channel, backend_for_channel(channel=channel))
        return backend.send(claim.outgoing)
    except Exception as exc:  # noqa: BLE001 - send() maps errors; this guards a broken backend
        logger.exception("backend %s raised for message %s", claim.backend_path, claim.outgoing.message_id)
        return SendResult.transient(f"{type(exc).__name__}: {exc}")


def message_deliver(*, message_id: int, now: datetime | None = None) -> Message | None:
    """Claim, send (outside any transaction), record. Returns the message, or None if nothing was due."""
    claim = delivery_claim(message_id=message_id, now=now or timezone.now())
    if claim is None:
        return None
    return delivery_record(claim=claim, result=_send(claim, {}), now=now or timezone.now())


def messages_deliver(*, message_ids: Iterable[int]) -> int:
    """Deliver a batch: claim a few at a time (one transaction per chunk), send and record each.

    Small chunks keep every claim well inside its lease even with a slow provider; past the task's time
    budget the rest goes back to the queue as a new task instead of running into the worker's timeout.
    """
    ids = list(message_ids)
    chunk = max(1, conf("CLAIM_CHUNK"))
    budget = conf("TASK_TIME_BUDGET").total_seconds()
    started = time.monotonic()
    backends: dict[str, BaseBackend] = {}
    done = 0
    for i in range(0, len(ids), chunk):
        if time.monotonic() - started > budget:
            messages_deliver_enqueue(message_ids=ids[i:])
            break
        for claim in deliveries_claim(message_ids=ids[i : i + chunk], now=timezone.now()):
            delivery_record(claim=claim, result=_send(claim, backends), now=timezone.now())
            done += 1
    return done


# --- the sweeper and the dead letter ------------------------------------------------------------------


def deliveries_sweep(*, now: datetime, limit: int) -> int:
    """Due work: re-drive accepted messages whose retry is due, whose claim outlived its lease, or whose
    first task never ran. Claims them with SKIP LOCKED and pushes their next look `REDRIVE_AFTER` ahead,
    so a second pass does not enqueue them again while their task waits in the queue."""
    grace = conf("REDRIVE_AFTER")
    with transaction.atomic():
        due = Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True) & (
            Q(accepted_at__lte=now - grace) | Q(accepted_at__isnull=True, created_at__lte=now - grace)
        )
        ids = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(due, status=MessageStatus.ACCEPTED)
            .order_by("next_attempt_at", "id")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Message.objects.filter(pk__in=ids).update(next_attempt_at=now + grace)
            transaction.on_commit(lambda: messages_deliver_enqueue(message_ids=ids), robust=True)
    return len(ids)


def message_delivery_retry(*, message_id: int, now: datetime | None = None) -> Message:
    """An operator's "retry now" on a dead letter: accepted again with a fresh retry budget."""
    now = now or timezone.now()
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=message_id)
        if message.status != MessageStatus.FAILED:
            raise ValueError(f"Message {message_id} is {message.status}, not failed.")
        message.attempts = 0
        message.next_attempt_at = None
        message.last_error = f"Retried by an operator at {now:%Y-%m-%d %H:%M} UTC; was: {message.last_error}"[
            :2000
        ]
        message.failed_at = None
        # accepted_at stays: it is when the governor cleared it, which is what caps count. The channels'
        # receiver hears of the move and enqueues delivery on commit.
        message_status_move(
            message=message,
            status=MessageStatus.ACCEPTED,
            at=now,
            stamp=False,
            update_fields=["failed_at", "attempts", "next_attempt_at", "last_error"],
        )
        return message
