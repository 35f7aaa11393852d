"""Delivery: every accepted message reaches its provider once, transient errors retry, failures stay.

The history is the outbox: the accepted messages that are due are the delivery queue. A transaction that
accepts messages raises one "wake-up pending" flag on commit (`deliveries_wake`: one django-q2 task per
burst, never one per message); the woken drain (`deliveries_drain`) loops:
1. claim — one short transaction per batch: lock up to CLAIM_BATCH due accepted messages (SKIP LOCKED:
   concurrent workers take disjoint batches), write an `in_progress` DeliveryAttempt for each and set
   their lease. A duplicate finds the lock or the claim and does nothing.
2. send — the provider calls outside any transaction, up to DELIVERY_THREADS in flight (a bounded pool),
   each provider within its concurrency and rate limits (`channels_app.providers`).
3. record — back in the worker's thread, a second short transaction per batch: each attempt's outcome and
   its message's new status (sent; a retry time with backoff and jitter; or failed, the dead letter).

Tasks with message ids (`messages_deliver`) run the same loop over their ids. PostgreSQL is the record
and django-q2 only the transport: `deliveries_sweep` (due work) re-drives accepted messages whose wake-up
was lost, whose retry is due, or whose claim outlived its lease.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.conf import Conf
from django_q.tasks import async_task

from orchestrator.consent import contact_point_suppress
from orchestrator.db import as_datetime, hot_cursor, ids_in, rows_insert, values_update
from orchestrator.history import message_status_move, messages_partial, messages_status_move_bulk
from orchestrator.models import ChangeKind, Channel, ContactPoint, Message, MessageStatus, Recipient, Source
from orchestrator.selectors import reachable_kind, reachable_where_sql, recipient_unreachable_reasons

from .backends import Outgoing, SendResult
from .models import AttemptOutcome, DeliveryAttempt, DeliveryWake
from .providers import ChainOutcome, ProviderChain, ProviderTry, circuit_checks_cached, provider_chain

logger = logging.getLogger(__name__)

TASK = "channels_app.tasks.messages_deliver_task"
DRAIN_TASK = "channels_app.tasks.deliveries_drain_task"
WAKE_ID = 1  # the one DeliveryWake row
# The columns the record of a plain success writes on its attempt.
ATTEMPT_RECORD_FIELDS = ("provider", "outcome", "finished_at", "provider_message_id", "response", "retry_at")
# The columns a claim writes on its in_progress attempt (every NOT NULL one).
ATTEMPT_CLAIM_FIELDS = (
    "message_id",
    "number",
    "provider",
    "started_at",
    "outcome",
    "provider_message_id",
    "response",
)


# Fallbacks for knobs a deployment's CHANNELS setting may not name.
DEFAULTS = {
    "DELIVERY_LEASE": timedelta(seconds=30),
    "CLAIM_CHUNK": 10,
    "TASK_TIME_BUDGET": timedelta(seconds=30),
    "TASK_BATCH_SIZE": 50,
    "DELIVERY_THREADS": 32,
    "CLAIM_BATCH": 100,
    "WAKE_TTL": timedelta(seconds=15),
}


def conf(name: str):
    return settings.CHANNELS[name] if name in settings.CHANNELS else DEFAULTS[name]


# --- enqueueing ---------------------------------------------------------------------------------------


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
    source: str = ""  # the message's source (its status listeners read it)


def retry_delay(*, attempts: int, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with jitter after `attempts` tries: base·2^(n-1), capped, ±jitter."""
    base, cap, jitter = conf("RETRY_BASE_DELAY"), conf("RETRY_MAX_DELAY"), conf("RETRY_JITTER")
    delay = min(base * (2 ** max(0, attempts - 1)), cap)
    return delay * (rng or random).uniform(1 - jitter, 1 + jitter)


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
    return _claim(message_ids=list(message_ids), now=now, limit=None)[0]


def deliveries_claim_due(
    *, now: datetime, limit: int, chains: dict[str, ProviderChain] | None = None
) -> tuple[list[Claim], int]:
    """The outbox: claim up to `limit` of the accepted messages that are due (never tried, retry due, or
    lease run out) in queue order, like `deliveries_claim`. One statement locks the batch (SKIP LOCKED:
    concurrent workers take disjoint batches) and one sets its lease. Returns the claims and how many
    due rows it locked (fewer than `limit`: the queue is drained, as far as this worker can see)."""
    return _claim(message_ids=None, now=now, limit=limit, chains=chains)


class _Due(NamedTuple):
    """A locked message as the claim reads it: the columns a delivery needs, its recipient's external id
    (no model instances: a batch is hundreds of rows, and Model.__init__ cost more than the statements)."""

    pk: int
    recipient_id: int
    external_id: str
    channel: str
    purpose: str
    source: str
    to_address: str
    content: Any
    expires_at: datetime | None
    attempts: int
    address: str | None  # where it goes: None when no contact point is reachable


class _Last(NamedTuple):
    """A message's latest delivery attempt, as the claim reads it."""

    pk: int
    number: int
    outcome: str
    started_at: datetime
    retry_at: datetime | None


def _due_lock(*, message_ids: list[int] | None, now: datetime, limit: int | None) -> list[_Due]:
    """Lock the batch and read it in one statement: the due accepted messages in queue order (or the
    accepted ones among `message_ids`) with their recipient's external id and where each goes (its named
    contact point, else its channel's newest reachable one, by the reachability rule of
    orchestrator.selectors; None when there is none). SKIP LOCKED: concurrent workers take disjoint
    batches. SQLite (make run) has no SKIP LOCKED: its single writer serialises the claims instead."""
    q = connection.ops.quote_name
    when = connection.ops.adapt_datetimefield_value(now)
    if message_ids is None:
        where = (
            "m.status = %s AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= %s)"
            " AND (m.deliver_after IS NULL OR m.deliver_after <= %s)"
        )
        params = [MessageStatus.ACCEPTED.value, when, when]
    else:
        where, params = ids_in("m.id", message_ids)
        where += " AND m.status = %s"
        params.append(MessageStatus.ACCEPTED.value)
    where += " ORDER BY m.id"
    if limit is not None:
        where += " LIMIT %s"
        params.append(limit)
    if connection.features.has_select_for_update_skip_locked:
        where += " FOR UPDATE SKIP LOCKED"
    table = q(Message._meta.db_table)
    address, address_params = _address_sql()
    # The batch is chosen and locked first (off the queue's index), then joined: the join then reads
    # n rows, not every due one.
    sql = (
        "SELECT m.id, m.recipient_id, r.external_id, m.channel, m.purpose, m.source, m.to_address,"
        f" m.content, m.expires_at, m.attempts, {address}"
        f" FROM (SELECT m.id FROM {table} m WHERE {where}) batch JOIN {table} m ON m.id = batch.id"
        f" JOIN {q(Recipient._meta.db_table)} r ON r.id = m.recipient_id ORDER BY m.id"
    )
    # Not prepared: planned per batch with its values (a generic plan could not see the queue's size).
    with hot_cursor() as (cursor, prepare):
        # prepare=False: never prepared, even past psycopg's prepare_threshold (settings.DATABASES).
        cursor.execute(sql, [*address_params, *params], **({"prepare": False} if prepare else {}))
        rows = cursor.fetchall()
    return [
        _Due(
            *row[:7],
            _json(row[7]),  # content
            as_datetime(row[8]),  # expires_at
            *row[9:],
        )
        for row in rows
    ]


def _json(value: Any) -> Any:
    """A JSON column read raw (text on PostgreSQL as Django configures it, and on SQLite), decoded as
    JSONField would (the json module: orjson would turn an integer past 64 bits into a float)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


@lru_cache(maxsize=1)
def _address_sql() -> tuple[str, tuple]:
    """Where message `m` goes, as a scalar subquery per reachability rule (replies follow their own)."""
    cp = connection.ops.quote_name(ContactPoint._meta.db_table)

    def newest(kind: str) -> tuple[str, tuple]:
        reachable, params = reachable_where_sql(kind)
        return (
            f"(SELECT {cp}.address FROM {cp} WHERE {cp}.recipient_id = m.recipient_id"
            f" AND {cp}.channel = m.channel AND (m.to_address = '' OR {cp}.address = m.to_address)"
            f" AND {reachable} ORDER BY {cp}.created_at DESC, {cp}.id DESC LIMIT 1)"
        ), params

    reply, reply_params = newest(reachable_kind(Source.REPLY))
    other, other_params = newest(reachable_kind(""))
    return (
        f"CASE WHEN m.source = %s THEN {reply} ELSE {other} END",
        (Source.REPLY.value, *reply_params, *other_params),
    )


def _last_attempts(message_ids: list[int]) -> dict[int, _Last]:
    """The latest attempt per message (at most RETRY_MAX_ATTEMPTS each): later numbers overwrite earlier
    ones. Portable, unlike DISTINCT ON, so delivery works on make run's SQLite too."""
    where, params = ids_in("message_id", message_ids)
    sql = (
        f"SELECT message_id, id, number, outcome, started_at, retry_at"
        f" FROM {connection.ops.quote_name(DeliveryAttempt._meta.db_table)} WHERE {where}"
        f" ORDER BY message_id, number"
    )
    with hot_cursor() as (cursor, _):
        cursor.execute(sql, params)
        return {
            mid: _Last(pk, number, outcome, as_datetime(started_at), as_datetime(retry_at))
            for mid, pk, number, outcome, started_at, retry_at in cursor.fetchall()
        }


def _claim(
    *,
    message_ids: list[int] | None,
    now: datetime,
    limit: int | None,
    chains: dict[str, ProviderChain] | None = None,
) -> tuple[list[Claim], int]:
    lease = conf("DELIVERY_LEASE")
    with transaction.atomic():
        rows = _due_lock(message_ids=message_ids, now=now, limit=limit)
        locked = len(rows)
        if not rows:
            return [], 0
        last_attempts = _last_attempts([row.pk for row in rows])
        addresses = {row.pk: row.address for row in rows if row.address is not None}
        claimable: list[tuple[_Due, int]] = []
        held: dict[datetime, list[int]] = {}
        odd: list[tuple[_Due, _Last | None]] = []  # a lost claim, expired, unreachable: one by one below
        for row in rows:
            last = last_attempts.get(row.pk)
            if last is not None and last.outcome == AttemptOutcome.IN_PROGRESS:
                if last.started_at > now - lease:
                    # A live claim (a duplicate task, or a heartbeat kept it past next_attempt_at): the
                    # outbox looks again when its renewed lease would run out.
                    held.setdefault(last.started_at + lease, []).append(row.pk)
                    continue
                odd.append((row, last))
                continue
            if (
                last is not None
                and last.outcome == AttemptOutcome.TRANSIENT
                and last.retry_at
                and last.retry_at > now
            ):
                continue  # an early duplicate: the retry is not due yet
            if (row.expires_at is not None and row.expires_at <= now) or row.pk not in addresses:
                odd.append((row, last))
                continue
            claimable.append((row, (last.number if last else 0) + 1))
        if odd:
            loaded = Message.objects.select_related("recipient").in_bulk([row.pk for row, _ in odd])
            for row, last in odd:
                if _claim_odd(message=loaded[row.pk], last=last, addresses=addresses, now=now):
                    claimable.append((row, (last.number if last else 0) + 1))
            claimable.sort(key=lambda pair: pair[0].pk)
        if message_ids is None:
            for until, pks in held.items():
                Message.objects.filter(pk__in=pks).update(next_attempt_at=until)
        if not claimable:
            return [], locked
        names = {
            ch: provider_chain(channel=ch, chains=chains).first
            for ch in {row.channel for row, _ in claimable}
        }
        attempt_ids = rows_insert(
            model=DeliveryAttempt,
            fields=ATTEMPT_CLAIM_FIELDS,
            rows=[
                (row.pk, n, names[row.channel], now, AttemptOutcome.IN_PROGRESS.value, "", "")
                for row, n in claimable
            ],
        )
        where, params = ids_in("id", [row.pk for row, _ in claimable])
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {connection.ops.quote_name(Message._meta.db_table)}"
                f" SET attempts = attempts + 1, next_attempt_at = %s, updated_at = %s WHERE {where}",
                [
                    connection.ops.adapt_datetimefield_value(now + lease),
                    connection.ops.adapt_datetimefield_value(now),
                    *params,
                ],
            )
        return [
            Claim(
                attempt_id=attempt_id,
                number=n,
                provider=names[row.channel],
                started_at=now,
                outgoing=Outgoing(
                    message_id=row.pk,
                    channel=row.channel,
                    purpose=row.purpose,
                    recipient=row.external_id,
                    recipient_id=row.recipient_id,
                    to=addresses[row.pk],
                    content=row.content if isinstance(row.content, dict) else dict(row.content or {}),
                    expires_at=row.expires_at,
                ),
                source=row.source,
            )
            for (row, n), attempt_id in zip(claimable, attempt_ids, strict=True)
        ], locked


def _claim_odd(*, message: Message, last: _Last | None, addresses: dict[int, str], now: datetime) -> bool:
    """The claim's uncommon cases, on the message's model instance (locked by the caller): a claim that
    outlived its lease is closed as lost (its message fails once out of retries); an expired message
    becomes expired and an unreachable one failed, without a provider call. Returns whether it is still
    to be claimed."""
    if last is not None and last.outcome == AttemptOutcome.IN_PROGRESS:
        response = "No result within the lease (worker lost?); outcome unknown."
        DeliveryAttempt.objects.filter(pk=last.pk).update(
            outcome=AttemptOutcome.TRANSIENT, finished_at=now, response=response
        )
        if message.attempts >= conf("RETRY_MAX_ATTEMPTS"):
            _fail(message, error=f"Gave up after {message.attempts} attempts; {response}", at=now)
            return False
    if message.expires_at is not None and message.expires_at <= now:
        message.next_attempt_at = None
        message.last_error = message.last_error or "Expired before it could be delivered."
        message_status_move(
            message=message,
            status=MessageStatus.EXPIRED,
            at=now,
            update_fields=["next_attempt_at", "last_error"],
        )
        return False
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
        return False
    return True


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
    with _lease_heartbeat({claim.attempt_id}):
        result = _send(claim, {})
    return delivery_record(claim=claim, result=result, now=now or timezone.now())


def _plain_success(outcome: ChainOutcome) -> bool:
    return (
        outcome.result.outcome == AttemptOutcome.SUCCESS
        and len(outcome.tries) == 1
        and not outcome.result.undeliverable
    )


def deliveries_record(*, outcomes: list[tuple[Claim, ChainOutcome]], now: datetime) -> int:
    """Record a batch of provider answers, as `delivery_record` would one by one. The common case, a
    plain success (one provider call, the message still accepted), is set-based: one transaction, one
    guarded update per table (a message moves only if it is still accepted), the status moves through
    orchestrator.history. Anything else (a retry, a failure, a failover, a receipt that got there first)
    goes through `delivery_record`. Returns how many were recorded."""
    plain = {c.outgoing.message_id: (c, o) for c, o in outcomes if _plain_success(o)}
    rest = [(c, o) for c, o in outcomes if c.outgoing.message_id not in plain]
    recorded = 0
    if plain:
        sent = MessageStatus.SENT.value
        # Only what the move writes and its listeners read; other fields load if one asks.
        rows = [
            {
                "id": pk,
                "status": sent,
                "source": claim.source,
                "provider": outcome.provider,
                "provider_message_id": outcome.result.provider_message_id[:255],
                "next_attempt_at": None,
                "last_error": "",
            }
            for pk, (claim, outcome) in sorted(plain.items())
        ]
        accepted = MessageStatus.ACCEPTED.value
        with transaction.atomic():
            moved = messages_status_move_bulk(
                moves=[(message, accepted) for message in messages_partial(rows)],
                at=now,
                update_fields=["provider", "provider_message_id", "next_attempt_at", "last_error"],
                unlocked=True,
            )
            attempts = []
            for message in moved:
                claim, outcome = plain.pop(message.pk)
                result = outcome.result
                response = _response(result, outcome.skipped)[:2000]
                pmid = message.provider_message_id
                attempts.append((claim.attempt_id, message.provider, result.outcome, pmid, response))
            if attempts:
                pks, providers, results, provider_ids, responses = zip(*attempts, strict=True)
                values_update(
                    model=DeliveryAttempt,
                    fields=ATTEMPT_RECORD_FIELDS,
                    pks=pks,
                    values=[providers, results, [now] * len(pks), provider_ids, responses, [None] * len(pks)],
                )
        recorded += len(moved)
        rest += list(plain.values())  # no longer accepted (a receipt, an operator): recorded one by one
    for claim, outcome in rest:
        try:
            delivery_record(claim=claim, result=outcome, now=now)
        except DatabaseError:
            raise  # the task fails; the claim's short lease lets the sweeper re-drive it soon
        except Exception:  # noqa: BLE001 - one message's bad row must not stop the batch
            logger.exception("recording the delivery of message %s failed", claim.outgoing.message_id)
            continue
        recorded += 1
    return recorded


class _SendPool:
    """Threads for provider calls, bounded. Answers go back to the caller's thread through one queue
    (no Future per call), which records them on its own connection; a pool thread that touched the
    database (the circuit breaker's bookkeeping) closes its connection after the call, so a pool of 32
    does not hold 32 connections."""

    def __init__(self, *, size: int, chains: dict[str, ProviderChain]):
        self.size = size
        self.chains = chains
        self.todo: queue.SimpleQueue = queue.SimpleQueue()
        self.answers: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.in_flight = 0
        self.cancelled = False

    def submit(self, claim: Claim) -> None:
        """Queue a call; a thread is started per call until the pool is full (a drain woken for one
        message starts one thread, not the whole pool)."""
        self.todo.put(claim)
        self.in_flight += 1
        if len(self.threads) < self.size:
            name = f"delivery-send-{len(self.threads)}"
            thread = threading.Thread(target=self._work, name=name, daemon=True)
            self.threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while (claim := self.todo.get()) is not None:
            if self.cancelled:
                continue  # not called (an error stopped the loop): left to the lease and the sweeper
            try:
                with circuit_checks_cached():
                    self.answers.put((claim, _send(claim, self.chains), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller with the answers
                self.answers.put((claim, None, exc))
            finally:
                connections.close_all()

    def collect(self, *, want: int, timeout: float, linger: float) -> list[tuple[Claim, Any, Any]]:
        """The answers that came in: waits up to `timeout` for a first one, then up to `linger` more
        for `want` in all (a few ms more make a bigger record batch) unless nothing else is in flight."""
        got = []
        try:
            got.append(self.answers.get(timeout=timeout))
        except queue.Empty:
            return got
        until = time.monotonic() + linger
        while len(got) < self.in_flight:
            try:
                got.append(self.answers.get_nowait())
                continue
            except queue.Empty:
                pass
            left = until - time.monotonic()
            if len(got) >= want or left <= 0:
                break
            try:
                got.append(self.answers.get(timeout=left))
            except queue.Empty:
                break
        self.in_flight -= len(got)
        return got

    def close(self, *, cancel: bool) -> None:
        self.cancelled = cancel
        for _ in self.threads:
            self.todo.put(None)
        for thread in self.threads:
            thread.join()


def _deliveries_run(
    *,
    claim_next: Callable[[int, dict[str, ProviderChain]], tuple[list[Claim], bool]],
    budget: timedelta,
    on_budget: Callable[[], None],
) -> int:
    """The delivery loop shared by the outbox drain and the id tasks: claim a batch (`claim_next(room)`
    returns the claims and whether there may be more), keep up to DELIVERY_THREADS provider calls in flight,
    record the answers in this thread in batches. Inside a transaction (tests, a synchronous cluster) the
    calls run one at a time in this thread: other connections could not see the claims. Past the time
    budget it stops claiming, finishes what is in flight and calls `on_budget` (more work waits)."""
    threads = conf("DELIVERY_THREADS")
    batch = max(1, conf("CLAIM_BATCH"))
    inline = threads <= 1 or transaction.get_connection().in_atomic_block
    window = batch if inline else threads + 2 * batch
    chains: dict[str, ProviderChain] = {}
    live: set[int] = set()  # attempt ids claimed and not yet recorded: the heartbeat renews them
    started = time.monotonic()
    more, done = True, 0
    pool = None if inline else _SendPool(size=threads, chains=chains)
    failed = True
    try:
        with _lease_heartbeat(live):
            while True:
                out_of_time = time.monotonic() - started > budget.total_seconds()
                in_flight = pool.in_flight if pool is not None else 0
                room = window - in_flight
                if more and not out_of_time and (room >= batch or not in_flight):
                    claims, more = claim_next(room, chains)
                    for claim in claims:
                        live.add(claim.attempt_id)
                        provider_chain(channel=claim.outgoing.channel, chains=chains)  # built here, once
                    if pool is None:
                        done += _record(
                            [(claim, _send(claim, chains)) for claim in claims], live=live, now=None
                        )
                        continue
                    for claim in claims:
                        pool.submit(claim)
                if pool is None or not pool.in_flight:
                    if more and not out_of_time:
                        continue
                    break
                answered = []
                for claim, outcome, error in pool.collect(want=batch // 2, timeout=1.0, linger=0.02):
                    if error is None:
                        answered.append((claim, outcome))
                        continue
                    logger.error(  # left to the lease and the sweeper
                        "the provider call for message %s failed",
                        claim.outgoing.message_id,
                        exc_info=(type(error), error, error.__traceback__),
                    )
                    live.discard(claim.attempt_id)
                done += _record(answered, live=live, now=None)
        failed = False
    finally:
        if pool is not None:
            pool.close(cancel=failed)
    if more:
        on_budget()
    return done


def _record(answered: list[tuple[Claim, ChainOutcome]], *, live: set[int], now: datetime | None) -> int:
    if not answered:
        return 0
    try:
        return deliveries_record(outcomes=answered, now=now or timezone.now())
    finally:
        live.difference_update(claim.attempt_id for claim, _ in answered)


def messages_deliver(*, message_ids: Iterable[int]) -> int:
    """Deliver the given messages (the sweeper's re-drive, or a task queued before the outbox): claim a
    chunk at a time, many provider calls in flight, record in batches. Past the task's time budget the
    rest goes back to the queue as a new task instead of running into the worker's timeout."""
    ids = list(message_ids)
    chunk = max(1, conf("CLAIM_CHUNK"))
    cursor = 0

    def claim_next(room: int, chains: dict[str, ProviderChain]) -> tuple[list[Claim], bool]:
        nonlocal cursor
        take = ids[cursor : cursor + max(1, min(room, chunk))]
        cursor += len(take)
        claims, _ = _claim(message_ids=take, now=timezone.now(), limit=None, chains=chains)
        return claims, cursor < len(ids)

    return _deliveries_run(
        claim_next=claim_next,
        budget=conf("TASK_TIME_BUDGET"),
        on_budget=lambda: messages_deliver_enqueue(message_ids=ids[cursor:]),
    )


# --- the outbox: the accepted messages are the queue ---------------------------------------------------


def deliveries_wake(*, message_ids: Iterable[int] = (), now: datetime | None = None) -> bool:
    """Accepted messages are due (called on commit of the transaction that accepted them): enqueue one
    django-q2 wake-up unless one is already on its way. The flag row makes a burst of 10k sends one
    task, not 10k pickled tasks; a flag older than WAKE_TTL counts as unset (its task may be lost). If
    the broker is down the flag is lowered again and the messages wait, recorded, for the sweeper.
    Returns whether it enqueued."""
    now = now or timezone.now()
    stale = now - conf("WAKE_TTL")
    with connection.cursor() as cursor:
        # Under load the flag is nearly always up: a plain read answers then, without locking the flag row
        # or committing a write (the upsert below locks the row even when its WHERE is false). Safe: this
        # runs after the sends committed, and a drain lowers the flag before it claims, so a flag seen up
        # belongs to a drain that has not claimed yet and will see them.
        cursor.execute(_wake_check_sql(), [WAKE_ID, stale])
        if cursor.fetchone() is not None:
            return False
        # Raise the flag if it is down (or stale), say whether it did.
        cursor.execute(_wake_sql(), [WAKE_ID, now, stale])
        if cursor.fetchone() is None:
            return False  # a wake-up is on its way; it will see these messages
    try:
        name = f"delivery wake-up {now:%H:%M:%S.%f} ({len(list(message_ids))} accepted)"
        async_task(DRAIN_TASK, task_name=name, group="delivery")
    except Exception:
        DeliveryWake.objects.filter(pk=WAKE_ID, requested_at=now).update(requested_at=None)
        raise
    return True


@lru_cache(maxsize=1)
def _wake_check_sql() -> str:
    table = connection.ops.quote_name(DeliveryWake._meta.db_table)
    return f"SELECT 1 FROM {table} WHERE id = %s AND requested_at >= %s"


@lru_cache(maxsize=1)
def _wake_sql() -> str:
    table = connection.ops.quote_name(DeliveryWake._meta.db_table)
    return (
        f"INSERT INTO {table} (id, requested_at) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE"
        f" SET requested_at = excluded.requested_at"
        f" WHERE {table}.requested_at IS NULL OR {table}.requested_at < %s RETURNING id"
    )


def deliveries_drain() -> int:
    """The wake-up's work: lower the flag (a send committed from now on wakes again), then deliver due
    accepted messages until none is left or the time budget is spent. A first batch that comes back full
    wakes one more worker to share the queue; a spent budget wakes the next drain."""
    DeliveryWake.objects.filter(pk=WAKE_ID).update(requested_at=None)
    batch = max(1, conf("CLAIM_BATCH"))
    first = True

    def claim_next(room: int, chains: dict[str, ProviderChain]) -> tuple[list[Claim], bool]:
        nonlocal first
        limit = max(1, min(room, batch))
        claims, locked = deliveries_claim_due(now=timezone.now(), limit=limit, chains=chains)
        more = locked >= limit
        if more and first and not (Conf.SYNC or transaction.get_connection().in_atomic_block):
            _wake_robust()  # a second worker shares a long queue (inline, it would only nest drains)
        first = False
        return claims, more

    return _deliveries_run(claim_next=claim_next, budget=conf("TASK_TIME_BUDGET"), on_budget=_wake_robust)


def _wake_robust() -> None:
    try:
        deliveries_wake()
    except Exception:  # noqa: BLE001 - the sweeper is the safety net
        logger.exception("could not enqueue a delivery wake-up")


def claims_renew(*, attempt_ids: list[int], now: datetime) -> int:
    """Renew the lease of claims still in progress: their worker is alive and busy with them."""
    return DeliveryAttempt.objects.filter(pk__in=attempt_ids, outcome=AttemptOutcome.IN_PROGRESS).update(
        started_at=now
    )


@contextmanager
def _lease_heartbeat(live: set[int]) -> Iterator[set[int]]:
    """While a worker goes through its claims (a slow provider, a failover chain, a full pool), a
    heartbeat renews the claims in `live` (attempt ids the caller adds on claim and removes once
    recorded) every third of the lease, so the lease only has to cover a worker that stopped beating —
    one that died, maybe after the provider accepted a message."""
    stop = threading.Event()
    every = conf("DELIVERY_LEASE").total_seconds() / 3

    def beat() -> None:
        try:
            while not stop.wait(every):
                pending = list(live)
                if pending:
                    claims_renew(attempt_ids=pending, now=timezone.now())
        except Exception:  # noqa: BLE001 - a missed beat only shortens the lease
            logger.exception("delivery lease heartbeat failed")
        finally:
            connections.close_all()  # this thread's own connection

    thread = threading.Thread(target=beat, name="delivery-lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield live
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
