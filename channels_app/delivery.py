"""Delivery: every accepted message reaches its provider once, transient errors retry, failures stay.

The flow per message (`message_deliver`, run by a thin django-q2 task):
1. claim — a short transaction: lock the message (SKIP LOCKED), check it is still accepted and due,
   write an `in_progress` DeliveryAttempt. A duplicate task finds the lock or the claim and does nothing.
2. send — the backend call, outside any transaction.
3. record — a second short transaction: the attempt's outcome and the message's new status
   (sent; a retry time with backoff and jitter; or failed, the dead letter).

PostgreSQL is the record and django-q2 only the transport: `deliveries_sweep` (due work) re-drives
accepted messages whose task was lost, whose retry is due, or whose claim outlived its lease.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from orchestrator.models import ContactPoint, Message, MessageStatus
from orchestrator.signals import message_status_changed

from .backends import Outgoing, SendResult, backend_for_channel
from .models import AttemptOutcome, DeliveryAttempt
from .services import message_status_move

logger = logging.getLogger(__name__)

TASK = "channels_app.tasks.messages_deliver_task"


def conf(name: str):
    return settings.CHANNELS[name]


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
    outgoing: Outgoing


def retry_delay(*, attempts: int, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with jitter after `attempts` tries: base·2^(n-1), capped, ±jitter."""
    base, cap, jitter = conf("RETRY_BASE_DELAY"), conf("RETRY_MAX_DELAY"), conf("RETRY_JITTER")
    delay = min(base * (2 ** max(0, attempts - 1)), cap)
    return delay * (rng or random).uniform(1 - jitter, 1 + jitter)


def _contact_address(message: Message) -> str | None:
    """Where this message goes: its named contact point, else the channel's newest; None if gone."""
    points = ContactPoint.objects.filter(
        recipient_id=message.recipient_id, channel=message.channel, opted_in=True
    )
    if message.to_address:
        points = points.filter(address=message.to_address)
    point = points.order_by("-created_at", "-id").first()
    return None if point is None else point.address


def _fail(message: Message, *, error: str, at: datetime) -> None:
    message.last_error = error
    message.next_attempt_at = None
    message_status_move(
        message=message, status=MessageStatus.FAILED, at=at, update_fields=["last_error", "next_attempt_at"]
    )


def delivery_claim(*, message_id: int, now: datetime) -> Claim | None:
    """Claim the message for one provider call, or None if there is nothing (more) to do now."""
    with transaction.atomic():
        message = (
            Message.objects.select_for_update(skip_locked=True)
            .filter(pk=message_id, status=MessageStatus.ACCEPTED)
            .select_related("recipient")
            .first()
        )
        if message is None:  # gone, not accepted any more, or another worker holds it right now
            return None
        last = message.delivery_attempts.order_by("-number").first()
        if last is not None and last.outcome == AttemptOutcome.IN_PROGRESS:
            if last.started_at > now - conf("DELIVERY_LEASE"):
                return None  # a live claim: this is a duplicate task
            last.outcome = AttemptOutcome.TRANSIENT
            last.finished_at = now
            last.response = "No result within the lease (worker lost?); outcome unknown, trying again."
            last.save(update_fields=["outcome", "finished_at", "response"])
        elif (
            last is not None
            and last.outcome == AttemptOutcome.TRANSIENT
            and last.retry_at
            and last.retry_at > now
        ):
            return None  # an early duplicate: the retry is not due yet
        if message.expires_at is not None and message.expires_at <= now:
            message.next_attempt_at = None
            message.last_error = message.last_error or "Expired before it could be delivered."
            message_status_move(
                message=message,
                status=MessageStatus.EXPIRED,
                at=now,
                update_fields=["next_attempt_at", "last_error"],
            )
            return None
        address = _contact_address(message)
        if address is None:
            wanted = f" {message.to_address!r}" if message.to_address else ""
            who = message.recipient.external_id
            _fail(message, error=f"{who} has no opted-in {message.channel} contact point{wanted}.", at=now)
            return None
        backend = backend_for_channel(channel=message.channel)
        number = (last.number if last else 0) + 1
        attempt = DeliveryAttempt.objects.create(
            message=message,
            number=number,
            provider=backend.name,
            started_at=now,
            outcome=AttemptOutcome.IN_PROGRESS,
        )
        message.attempts += 1
        message.next_attempt_at = now + conf("DELIVERY_LEASE")
        message.save(update_fields=["attempts", "next_attempt_at", "updated_at"])
        return Claim(
            attempt_id=attempt.pk,
            number=number,
            backend_path=conf("BACKENDS")[message.channel],
            outgoing=Outgoing(
                message_id=message.pk,
                channel=message.channel,
                purpose=message.purpose,
                recipient=message.recipient.external_id,
                to=address,
                content=dict(message.content or {}),
                expires_at=message.expires_at,
            ),
        )


def delivery_record(*, claim: Claim, result: SendResult, now: datetime) -> Message:
    """Record the provider's answer on the attempt and move the message on (second short transaction)."""
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=claim.outgoing.message_id)
        attempt = DeliveryAttempt.objects.select_for_update().get(pk=claim.attempt_id)
        attempt.outcome = result.outcome
        attempt.finished_at = now
        attempt.provider_message_id = result.provider_message_id[:255]
        attempt.response = result.summary[:2000]
        if message.status != MessageStatus.ACCEPTED:
            # A receipt got here first (delivered before we heard back) or an operator acted: record the
            # attempt, fill what the provider told us, and leave the status where it is.
            attempt.save()
            if result.outcome == AttemptOutcome.SUCCESS:
                message.provider = attempt.provider
                message.provider_message_id = attempt.provider_message_id
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
            return message
        message.provider = attempt.provider
        if result.outcome == AttemptOutcome.SUCCESS:
            attempt.save()
            message.provider_message_id = attempt.provider_message_id
            message.next_attempt_at = None
            message.last_error = ""
            return message_status_move(
                message=message,
                status=MessageStatus.SENT,
                at=now,
                update_fields=["provider", "provider_message_id", "next_attempt_at", "last_error"],
            )
        if result.outcome == AttemptOutcome.TRANSIENT and message.attempts < conf("RETRY_MAX_ATTEMPTS"):
            attempt.retry_at = now + retry_delay(attempts=message.attempts)
            attempt.save()
            message.next_attempt_at = attempt.retry_at
            message.last_error = result.summary
            message.save(update_fields=["provider", "next_attempt_at", "last_error", "updated_at"])
            return message
        attempt.save()
        if result.outcome == AttemptOutcome.TRANSIENT:
            error = f"Gave up after {message.attempts} attempts; last error: {result.summary}"
        else:
            error = result.summary
        message.save(update_fields=["provider"])
        _fail(message, error=error, at=now)
        return message


def message_deliver(*, message_id: int, now: datetime | None = None) -> Message | None:
    """Claim, send (outside any transaction), record. Returns the message, or None if nothing was due."""
    claim = delivery_claim(message_id=message_id, now=now or timezone.now())
    if claim is None:
        return None
    backend = backend_for_channel(channel=claim.outgoing.channel)
    try:
        result = backend.send(claim.outgoing)
    except Exception as exc:  # noqa: BLE001 - send() maps errors; this guards a broken backend
        logger.exception("backend %s raised for message %s", claim.backend_path, claim.outgoing.message_id)
        result = SendResult.transient(f"{type(exc).__name__}: {exc}")
    return delivery_record(claim=claim, result=result, now=now or timezone.now())


def messages_deliver(*, message_ids: Iterable[int]) -> int:
    """Deliver each message in turn (one claim per message); returns how many were handed over."""
    done = 0
    for message_id in message_ids:
        if message_deliver(message_id=message_id) is not None:
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
            transaction.on_commit(lambda: messages_deliver_enqueue(message_ids=ids))
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
        previous, message.status, message.failed_at = message.status, MessageStatus.ACCEPTED, None
        # accepted_at stays: it is when the governor cleared it, which is what caps count.
        message.save(
            update_fields=["status", "failed_at", "attempts", "next_attempt_at", "last_error", "updated_at"]
        )
        # The receiver sees status accepted and enqueues delivery on commit.
        message_status_changed.send(sender=Message, message=message, previous=previous)
        return message
