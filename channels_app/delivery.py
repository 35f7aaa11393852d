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
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from orchestrator.consent import contact_point_suppress
from orchestrator.history import message_status_move
from orchestrator.models import ChangeKind, Channel, Message, MessageStatus
from orchestrator.selectors import reachable_kind, recipient_unreachable_reasons, recipients_reachable_points

from .backends import Outgoing, SendResult
from .models import AttemptOutcome, DeliveryAttempt
from .providers import ChainOutcome, ProviderChain, ProviderTry, provider_chain

logger = logging.getLogger(__name__)

TASK = "channels_app.tasks.messages_deliver_task"


# Fallbacks for knobs a deployment's CHANNELS setting may not name.
DEFAULTS = {
    "DELIVERY_LEASE": timedelta(seconds=30),
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
    provider: str
    started_at: datetime
    outgoing: Outgoing


def retry_delay(*, attempts: int, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with jitter after `attempts` tries: base·2^(n-1), capped, ±jitter."""
    base, cap, jitter = conf("RETRY_BASE_DELAY"), conf("RETRY_MAX_DELAY"), conf("RETRY_JITTER")
    delay = min(base * (2 ** max(0, attempts - 1)), cap)
    return delay * (rng or random).uniform(1 - jitter, 1 + jitter)


def _contact_addresses(messages: list[Message]) -> dict[int, str]:
    """Where each message goes: its named contact point, else its channel's newest reachable one (the
    reachability rule of orchestrator.selectors). Messages whose contact point is gone, opted out or
    undeliverable are missing from the result. One query per kind of source in the batch."""
    points: dict[tuple[str, int], dict[str, list[str]]] = {}
    for kind in {reachable_kind(m.source) for m in messages}:
        ids = {m.recipient_id for m in messages if reachable_kind(m.source) == kind}
        for rid, channels in recipients_reachable_points(recipient_ids=ids, source=kind).items():
            points[(kind, rid)] = channels
    found = {}
    for m in messages:
        candidates = points.get((reachable_kind(m.source), m.recipient_id), {}).get(m.channel, [])
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


def deliveries_claim(*, message_ids: Iterable[int], now: datetime) -> list[Claim]:
    """Claim each message that is accepted and due for one provider call, in one short transaction.

    Rows another worker holds are skipped (SKIP LOCKED); a message with a live claim or a retry not yet
    due is left alone (a duplicate task); a claim not renewed within the lease (its worker died, maybe
    after the provider accepted it) is closed as lost and replaced: the repeat carries the same
    idempotency key, which providers that support one treat as a no-op.
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
                why = recipient_unreachable_reasons(recipient=message.recipient).get(message.channel)
                _fail(
                    message,
                    error=f"{who} has no opted-in {message.channel} contact point{wanted} that is deliverable"
                    + (f": {why}." if why else "."),
                    at=now,
                )
                continue
            claimable.append((message, (last.number if last else 0) + 1))
        if not claimable:
            return []
        names = {ch: provider_chain(channel=ch).first for ch in {m.channel for m, _ in claimable}}
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
                provider=names[m.channel],
                started_at=now,
                outgoing=Outgoing(
                    message_id=m.pk,
                    channel=m.channel,
                    purpose=m.purpose,
                    recipient=m.recipient.external_id,
                    recipient_id=m.recipient_id,
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


def delivery_record(*, claim: Claim, result: SendResult | ChainOutcome, now: datetime) -> Message:
    """Record the providers' answers on the attempt rows and move the message on (second short
    transaction). The claimed row takes the first provider's answer; each failover call gets a row of its
    own after it, so the rows say which provider answered what and the last row is the deciding one."""
    if isinstance(result, SendResult):
        result = ChainOutcome(
            result, claim.provider, [ProviderTry(claim.provider, result, claim.started_at, now)], []
        )
    outcome = result
    result = outcome.result
    retry_at = None
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=claim.outgoing.message_id)
        message.provider = outcome.provider
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
        if result.undeliverable:
            # The provider says the address itself is dead: nothing more goes to it until cleared.
            contact_point_suppress(
                channel=message.channel,
                address=claim.outgoing.to,
                kind=ChangeKind.TOKEN_LOST if message.channel == Channel.PUSH else ChangeKind.HARD_BOUNCE,
                reason=f"{outcome.provider}: {result.summary}",
                at=now,
                recipient_id=message.recipient_id,
                message_id=message.pk,
            )
        tries = outcome.tries or [ProviderTry(outcome.provider, result, claim.started_at, now)]
        first, rest = tries[0], tries[1:]
        last_retry = retry_at if not rest else None
        DeliveryAttempt.objects.filter(pk=claim.attempt_id).update(
            provider=first.provider,
            outcome=first.result.outcome,
            finished_at=now if not rest else first.finished_at,
            provider_message_id=first.result.provider_message_id[:255],
            response=_response(first.result, outcome.skipped if not rest else [])[:2000],
            retry_at=last_retry,
        )
        if rest:
            DeliveryAttempt.objects.bulk_create(
                [
                    DeliveryAttempt(
                        message_id=message.pk,
                        number=claim.number + n,
                        provider=t.provider,
                        started_at=t.started_at,
                        finished_at=now if n == len(rest) else t.finished_at,
                        outcome=t.result.outcome,
                        provider_message_id=t.result.provider_message_id[:255],
                        response=_response(t.result, outcome.skipped if n == len(rest) else [])[:2000],
                        retry_at=retry_at if n == len(rest) else None,
                    )
                    for n, t in enumerate(rest, start=1)
                ]
            )
        return message


def _response(result: SendResult, skipped: list[str]) -> str:
    if not skipped or "(skipped " in result.summary:
        return result.summary
    return f"{result.summary} (skipped {'; '.join(skipped)})"


def _send(claim: Claim, chains: dict[str, ProviderChain]) -> ChainOutcome:
    """The provider calls (outside any transaction): the channel's providers in order, with failover."""
    return provider_chain(channel=claim.outgoing.channel, chains=chains).send(claim.outgoing)


def message_deliver(*, message_id: int, now: datetime | None = None) -> Message | None:
    """Claim, send (outside any transaction), record. Returns the message, or None if nothing was due."""
    claim = delivery_claim(message_id=message_id, now=now or timezone.now())
    if claim is None:
        return None
    with _lease_heartbeat([claim]):
        result = _send(claim, {})
    return delivery_record(claim=claim, result=result, now=now or timezone.now())


def messages_deliver(*, message_ids: Iterable[int]) -> int:
    """Deliver a batch: claim a few at a time (one transaction per chunk), send and record each.

    Small chunks keep every claim well inside its lease even with a slow provider; past the task's time
    budget the rest goes back to the queue as a new task instead of running into the worker's timeout.
    """
    ids = list(message_ids)
    chunk = max(1, conf("CLAIM_CHUNK"))
    budget = conf("TASK_TIME_BUDGET").total_seconds()
    started = time.monotonic()
    chains: dict[str, ProviderChain] = {}
    done = 0
    for i in range(0, len(ids), chunk):
        if time.monotonic() - started > budget:
            messages_deliver_enqueue(message_ids=ids[i:])
            break
        claims = deliveries_claim(message_ids=ids[i : i + chunk], now=timezone.now())
        with _lease_heartbeat(claims) as finished:
            for claim in claims:
                result = _send(claim, chains)
                try:
                    delivery_record(claim=claim, result=result, now=timezone.now())
                except DatabaseError:
                    raise  # the task fails; the claim's short lease lets the sweeper re-drive it soon
                except Exception:  # noqa: BLE001 - one message's bad row must not stop the batch
                    logger.exception("recording the delivery of message %s failed", claim.outgoing.message_id)
                    continue
                finally:
                    finished.add(claim.attempt_id)
                done += 1
    return done


def claims_renew(*, attempt_ids: list[int], now: datetime) -> int:
    """Renew the lease of claims still in progress: their worker is alive and busy with them."""
    return DeliveryAttempt.objects.filter(pk__in=attempt_ids, outcome=AttemptOutcome.IN_PROGRESS).update(
        started_at=now
    )


@contextmanager
def _lease_heartbeat(claims: list[Claim]) -> Iterator[set[int]]:
    """While a worker goes through its claims (a slow provider, a failover chain, a long chunk), a
    heartbeat renews the claims it has not finished every third of the lease, so the lease only has to
    cover a worker that stopped beating — one that died, maybe after the provider accepted a message.
    Yields the set the caller adds each finished attempt id to."""
    finished: set[int] = set()
    stop = threading.Event()
    every = conf("DELIVERY_LEASE").total_seconds() / 3

    def beat() -> None:
        try:
            while not stop.wait(every):
                pending = [c.attempt_id for c in claims if c.attempt_id not in finished]
                if pending:
                    claims_renew(attempt_ids=pending, now=timezone.now())
        except Exception:  # noqa: BLE001 - a missed beat only shortens the lease
            logger.exception("delivery lease heartbeat failed")
        finally:
            connections.close_all()  # this thread's own connection

    thread = threading.Thread(target=beat, name="delivery-lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield finished
    finally:
        stop.set()
        thread.join()


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
