"""The governor's decision, its set-based twin for campaigns, the deferred re-drive and channel pauses.

Every message from any source is decided here in ONE short transaction that locks the recipient row,
counts the history and writes the Message with its decision: concurrent decisions for one recipient
serialize on that lock, so none slips past a cap. No provider call happens under the lock.

Window edges: a rule counts messages whose `accepted_at` lies in (at - window, at]. A message cleared
exactly one window ago no longer counts, so its slot frees at exactly accepted_at + window.

Priority arbitration: due deferred messages (deliver_after <= at, not expired) that are ahead in the
queue (higher priority, or the same priority and older) count against the caps as if taken now, so a
newcomer cannot steal the slot they are waiting for; the re-drive takes due deferred messages by
recipient, priority (highest first) and age (oldest first).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.db.models import Q
from django.db.models.base import ModelState
from django.db.models.signals import post_save, pre_save
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orchestrator.models import Channel, Message, MessageStatus, Preference, Recipient
from orchestrator.signals import message_status_changed

from .models import ChannelPause, PauseMode
from .policy import Decision, Policy, Rule, RuleUse, decide, policy_cache_clear, policy_current

logger = logging.getLogger(__name__)

CHUNK = 5000  # recipients per set-based query (keeps IN lists and parameters bounded)
REDRIVE_BATCH = 500
CHANNELS_TEXT = ", ".join(Channel.values)
MESSAGE_TABLE = Message._meta.db_table
RECIPIENT_TABLE = Recipient._meta.db_table
PREFERENCE_TABLE = Preference._meta.db_table

STATUS_STAMP = {
    MessageStatus.ACCEPTED: "accepted_at",
    MessageStatus.DEFERRED: "deferred_at",
    MessageStatus.SUPPRESSED: "suppressed_at",
    MessageStatus.EXPIRED: "expired_at",
}


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def _match(rule: Rule) -> Q:
    """Messages that count against `rule`."""
    q = Q(purpose__in=sorted(rule.purposes))
    return q & Q(channel__in=sorted(rule.channels)) if rule.channels else q


def _kth_oldest_cleared(rule: Rule, k: int, *, recipient_id: int, at: datetime) -> datetime:
    """When the k-th oldest message counting against `rule` was cleared (its slot frees a window later)."""
    return (
        Message.objects.filter(
            _match(rule), recipient_id=recipient_id, accepted_at__gt=at - rule.window, accepted_at__lte=at
        )
        .order_by("accepted_at")
        .values_list("accepted_at", flat=True)[k - 1]
    )


def _in(column: str, values: Iterable[str]) -> tuple[str, list]:
    values = sorted(values)
    return f"{column} IN ({', '.join(['%s'] * len(values))})", values


def _match_sql(rule: Rule) -> tuple[str, list]:
    sql, params = _in("purpose", rule.purposes)
    if rule.channels:
        channels_sql, channels = _in("channel", rule.channels)
        sql, params = f"{sql} AND {channels_sql}", params + channels
    return sql, params


def _as_datetime(value) -> datetime | None:
    """Raw cursors on SQLite return timestamps as text."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = parse_datetime(value)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


@contextmanager
def _hot_cursor():
    """A cursor for the per-message statements. On PostgreSQL, a psycopg cursor with server-side
    binding on the current (transactional) connection, so the statements are prepared once per
    connection instead of parsed and planned per call; elsewhere Django's own cursor."""
    if connection.vendor == "postgresql":
        import psycopg

        connection.ensure_connection()
        # Errors surface as django.db exceptions, as from Django's own cursors.
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            yield cursor, {"prepare": True}
    else:
        with connection.cursor() as cursor:
            yield cursor, {}


@lru_cache(maxsize=64)
def _window_sql(rules: tuple[Rule, ...]) -> tuple[str, dict[str, str]]:
    """The one aggregate statement counting every rule's window and queue ahead (text cached per policy).

    Named parameters: each value (at, the priority, a purpose) is sent once however often it is used.
    """
    columns, static = [], {}
    ahead = (
        "status = 'deferred' AND deliver_after <= %(at)s AND (expires_at IS NULL OR expires_at > %(at)s)"
        " AND (priority > %(priority)s OR (priority = %(priority)s AND created_at <= %(at)s))"
    )
    for n, r in enumerate(rules):
        names = []
        for k, purpose in enumerate(sorted(r.purposes)):
            static[f"r{n}p{k}"] = purpose
            names.append(f"%(r{n}p{k})s")
        match = f"purpose IN ({', '.join(names)})"
        if r.channels:
            names = []
            for k, channel in enumerate(sorted(r.channels)):
                static[f"r{n}c{k}"] = channel
                names.append(f"%(r{n}c{k})s")
            match += f" AND channel IN ({', '.join(names)})"
        window = f"accepted_at > %(from{n})s AND accepted_at <= %(at)s AND {match}"
        columns += [
            f"COUNT(*) FILTER (WHERE {window})",
            f"MIN(accepted_at) FILTER (WHERE {window})",
            f"COUNT(*) FILTER (WHERE {ahead} AND {match})",
        ]
    sql = (
        f"SELECT {', '.join(columns)} FROM {MESSAGE_TABLE} WHERE recipient_id = %(recipient)s"
        " AND ((accepted_at > %(from)s AND accepted_at <= %(at)s)"
        " OR (status = 'deferred' AND deliver_after <= %(at)s))"
    )
    return sql, static


def _recipient_decide(
    *,
    policy: Policy,
    recipient_id: int,
    channel: str,
    purpose: str,
    priority: int,
    expires_at: datetime | None,
    deliver_after: datetime | None,
    at: datetime,
    lock: bool,
    cursor,
    prepare: dict,
) -> Decision:
    """Read what one decision needs (2 statements) and decide. With `lock`, takes the recipient's row lock.

    Plain SQL on the hot path: the ORM spent far longer compiling these than PostgreSQL running them.
    """
    postgres = connection.vendor == "postgresql"
    # The recipient row is the mutex for its decisions: a concurrent decision for the same person waits
    # here until this transaction commits, then counts the message that one wrote. The count below is
    # a separate statement on purpose: a statement's snapshot is taken before it waits for the lock.
    for_update = " FOR UPDATE OF r" if lock and postgres else ""
    lock_sql = (
        f"SELECT r.timezone, EXISTS(SELECT 1 FROM {PREFERENCE_TABLE} p WHERE p.recipient_id = r.id"
        f" AND p.channel = %s AND p.purpose = %s AND NOT p.opted_in)"
        f" FROM {RECIPIENT_TABLE} r WHERE r.id = %s{for_update}"
    )
    lock_params = [channel, purpose, recipient_id]
    rules = policy.rules_for(channel, purpose)
    count = bool(rules) and channel not in policy.pauses
    if count:
        # Every applicable rule counted in ONE aggregate statement over the recipient's window
        # (index message_recipient_cleared) and due queue ahead (governor_message_deferred_recipient).
        count_sql, static = _window_sql(tuple(rules))
        count_params = {
            **static,
            "at": at,
            "priority": priority,
            "recipient": recipient_id,
            "from": at - max(r.window for r in rules),
            **{f"from{n}": at - r.window for n, r in enumerate(rules)},
        }

    cursor.execute(lock_sql, lock_params, **prepare)
    row = cursor.fetchone()
    if row is None:
        raise Recipient.DoesNotExist(f"No recipient {recipient_id}.")
    tz_name, opted_out = row[0], bool(row[1])
    uses: dict[int, RuleUse] = {}
    if count and not opted_out:
        cursor.execute(count_sql, count_params, **prepare)
        counts = cursor.fetchone()
        uses = {
            r.id: RuleUse(counts[3 * n], _as_datetime(counts[3 * n + 1]), counts[3 * n + 2])
            for n, r in enumerate(rules)
        }

    kth_oldest = partial(_kth_oldest_cleared, recipient_id=recipient_id, at=at)

    return decide(
        policy,
        tz=_zone(tz_name),
        opted_out=opted_out,
        channel=channel,
        purpose=purpose,
        expires_at=expires_at,
        deliver_after=deliver_after,
        at=at,
        uses=uses,
        kth_oldest=kth_oldest,
    )


@lru_cache(maxsize=4)
def _insert_plan(vendor: str) -> tuple[list[str], frozenset[str], dict[str, str]]:
    fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    json_fields = frozenset(f.attname for f in fields if f.get_internal_type() == "JSONField")
    columns = {f.attname: connection.ops.quote_name(f.column) for f in fields}
    return [f.attname for f in fields], json_fields, columns


@lru_cache(maxsize=64)
def _insert_sql(present: tuple[str, ...], returning: bool) -> str:
    """INSERT of the columns that have a value (NULLs are left to the column): a handful of shapes."""
    _, _, columns = _insert_plan(connection.vendor)
    sql = (
        f"INSERT INTO {MESSAGE_TABLE} ({', '.join(columns[a] for a in present)})"
        f" VALUES ({', '.join(['%s'] * len(present))})"
    )
    return sql + (" RETURNING id" if returning else "")


@lru_cache(maxsize=1)
def _message_defaults() -> dict[str, Any]:
    """Constant defaults of Message's fields (callable ones are always given by _message_insert)."""
    return {
        f.attname: f.get_default()
        for f in Message._meta.concrete_fields
        if not f.primary_key and not (f.has_default() and callable(f.default))
    }


def _message_insert(
    recipient: Recipient, fields: dict[str, Any], *, cursor, prepare: dict, at: datetime
) -> Message:
    """INSERT one Message (what Model.save does, signals included, without the ORM's compilation)."""
    alias = connection.alias
    postgres = connection.vendor == "postgresql"
    returning = connection.features.can_return_columns_from_insert
    attnames, json_fields, _ = _insert_plan(connection.vendor)
    row = {**_message_defaults(), **fields, "recipient_id": recipient.pk, "updated_at": at}
    message = _message_loaded(None, attnames, [row[a] for a in attnames])
    Message.recipient.field.set_cached_value(message, recipient)
    message._state.adding = True
    pre_save.send(sender=Message, instance=message, raw=False, using=alias, update_fields=None)
    present = tuple(a for a in attnames if getattr(message, a) is not None)
    sql = _insert_sql(present, returning)
    if postgres:
        from psycopg.types.json import Jsonb

        values = [Jsonb(getattr(message, a)) if a in json_fields else getattr(message, a) for a in present]
    else:
        prep = {f.attname: f for f in Message._meta.concrete_fields}
        values = [prep[a].get_db_prep_save(getattr(message, a), connection) for a in present]
    cursor.execute(sql, values, **prepare)
    message.pk = cursor.fetchone()[0] if returning else cursor.lastrowid
    message._state.adding = False
    post_save.send(sender=Message, instance=message, created=True, raw=False, using=alias, update_fields=None)
    return message


def _decision_fields(decision: Decision, *, at: datetime, deliver_after: datetime | None) -> dict:
    fields = {
        "status": decision.status,
        "rule": decision.rule,
        "reason": decision.reason,
        "decided_at": at,
        STATUS_STAMP[decision.status]: at,
        "deliver_after": (
            decision.deliver_after if decision.status == MessageStatus.DEFERRED else deliver_after
        ),
    }
    return fields


def message_decide(
    *,
    recipient: Recipient,
    channel: str,
    purpose: str,
    content: dict[str, Any],
    priority: int,
    expires_at: datetime | None,
    deliver_after: datetime | None,
    source: str,
    source_ref: str,
    requested_channel: str,
    channel_reason: str,
    warnings: list[dict[str, str]],
    to_address: str = "",
    at: datetime,
) -> Message:
    """Decide and record one message in one transaction holding the recipient's row lock.

    Status: accepted, deferred (deliver_after = the earliest time it could pass; None while its channel
    is paused), suppressed (preferences, pause) or expired (it could not pass before expires_at).
    """
    policy = policy_current()
    with transaction.atomic(), _hot_cursor() as (cursor, prepare):
        decision = _recipient_decide(
            policy=policy,
            recipient_id=recipient.pk,
            channel=channel,
            purpose=purpose,
            priority=priority,
            expires_at=expires_at,
            deliver_after=deliver_after,
            at=at,
            lock=True,
            cursor=cursor,
            prepare=prepare,
        )
        return _message_insert(
            recipient,
            {
                "channel": channel,
                "purpose": purpose,
                "content": content,
                "priority": priority,
                "expires_at": expires_at,
                "source": source,
                "source_ref": source_ref,
                "requested_channel": requested_channel,
                "channel_reason": channel_reason,
                "warnings": warnings,
                "to_address": to_address,
                "created_at": at,
                **_decision_fields(decision, at=at, deliver_after=deliver_after),
            },
            cursor=cursor,
            prepare=prepare,
            at=at,
        )


def governor_check(
    *,
    recipient: Recipient,
    channel: str,
    purpose: str,
    priority: int = 50,
    expires_at: datetime | None = None,
    deliver_after: datetime | None = None,
    at: datetime | None = None,
) -> Decision:
    """The dry run: the decision message_decide would make now, without locking or writing anything."""
    with _hot_cursor() as (cursor, prepare):
        return _recipient_decide(
            policy=policy_current(),
            recipient_id=recipient.pk,
            channel=channel,
            purpose=purpose,
            priority=priority,
            expires_at=expires_at,
            deliver_after=deliver_after,
            at=at or timezone.now(),
            lock=False,
            cursor=cursor,
            prepare=prepare,
        )


# ---- set-based: many recipients at once ----------------------------------------------------------


@dataclass(frozen=True)
class MessageDraft:
    """A message ready for the governor: validated, channel chosen, linted."""

    recipient_id: int
    channel: str
    purpose: str
    content: dict[str, Any]
    priority: int = 50
    expires_at: datetime | None = None
    source: str = "api"
    source_ref: str = ""
    requested_channel: str = ""
    channel_reason: str = ""
    warnings: list[dict[str, str]] = field(default_factory=list)
    to_address: str = ""
    deliver_after: datetime | None = None


@dataclass
class _Waiting:
    """A due deferred message (a candidate for 'ahead in the queue')."""

    pk: int
    channel: str
    purpose: str
    priority: int
    created_at: datetime

    def ahead_of(self, *, priority: int, created_at: datetime, pk: int | None) -> bool:
        if self.priority != priority:
            return self.priority > priority
        if pk is None:
            return self.created_at <= created_at
        return (self.created_at, self.pk) < (created_at, pk)


def _ids_sql(column: str, ids: list[int]) -> tuple[str, list]:
    """`column` among `ids`: one array parameter on PostgreSQL, an IN list elsewhere."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [ids]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", list(ids)


class _Batch:
    """What the decisions for many recipients need, loaded with a few set-based queries per CHUNK
    recipients (locks in id order, opt-outs, one grouped window count, the due queue); decisions
    are then made in memory and the batch keeps count of what it clears."""

    def __init__(self, *, policy: Policy, at: datetime, recipient_ids: Iterable[int], lock: bool):
        self.policy, self.at = policy, at
        self.tz: dict[int, str] = {}
        self.opted_out: set[tuple[int, str, str]] = set()
        self.uses: dict[tuple[int, int], RuleUse] = {}
        self.taken: dict[tuple[int, int], int] = defaultdict(int)
        self.waiting: dict[int, list[_Waiting]] = defaultdict(list)
        self.done: set[int] = set()
        ids = sorted(set(recipient_ids))
        for start in range(0, len(ids), CHUNK):
            self._load(ids[start : start + CHUNK], lock=lock)

    def _load(self, ids: list[int], *, lock: bool) -> None:
        at, rules = self.at, self.policy.rules
        postgres = connection.vendor == "postgresql"
        with connection.cursor() as cursor:
            where, params = _ids_sql("id", ids)
            # Row locks in id order: two batches (or a batch and single decisions) never deadlock.
            for_update = " FOR UPDATE" if lock and postgres else ""
            cursor.execute(
                f"SELECT id, timezone FROM {RECIPIENT_TABLE} WHERE {where} ORDER BY id{for_update}", params
            )
            self.tz.update(cursor.fetchall())
            where, params = _ids_sql("recipient_id", ids)
            cursor.execute(
                f"SELECT recipient_id, channel, purpose FROM {PREFERENCE_TABLE}"
                f" WHERE {where} AND NOT opted_in",
                params,
            )
            self.opted_out.update(map(tuple, cursor.fetchall()))
            if rules:
                # Every rule's window for every recipient of the chunk in ONE grouped statement.
                columns, column_params = [], []
                for r in rules:
                    match, match_params = _match_sql(r)
                    window = f"accepted_at > %s AND accepted_at <= %s AND {match}"
                    columns += [
                        f"COUNT(*) FILTER (WHERE {window})",
                        f"MIN(accepted_at) FILTER (WHERE {window})",
                    ]
                    column_params += [at - r.window, at, *match_params] * 2
                cursor.execute(
                    f"SELECT recipient_id, {', '.join(columns)} FROM {MESSAGE_TABLE} WHERE {where}"
                    " AND accepted_at > %s AND accepted_at <= %s GROUP BY recipient_id",
                    [*column_params, *params, at - self.policy.max_window, at],
                )
                for row in cursor.fetchall():
                    for n, r in enumerate(rules):
                        if row[1 + 2 * n]:
                            self.uses[(row[0], r.id)] = RuleUse(row[1 + 2 * n], _as_datetime(row[2 + 2 * n]))
            cursor.execute(
                f"SELECT id, recipient_id, channel, purpose, priority, created_at FROM {MESSAGE_TABLE}"
                f" WHERE {where} AND status = 'deferred' AND deliver_after <= %s"
                " AND (expires_at IS NULL OR expires_at > %s)",
                [*params, at, at],
            )
            for pk, rid, channel, purpose, priority, created_at in cursor.fetchall():
                self.waiting[rid].append(_Waiting(pk, channel, purpose, priority, _as_datetime(created_at)))

    def decide(
        self,
        *,
        recipient_id: int,
        channel: str,
        purpose: str,
        priority: int,
        expires_at: datetime | None,
        deliver_after: datetime | None = None,
        created_at: datetime | None = None,
        pk: int | None = None,
    ) -> Decision:
        at = self.at
        created_at = created_at or at
        waiting = [
            w
            for w in self.waiting.get(recipient_id, ())
            if w.pk != pk
            and w.pk not in self.done
            and w.ahead_of(priority=priority, created_at=created_at, pk=pk)
        ]
        uses = {}
        for r in self.policy.rules_for(channel, purpose):
            base = self.uses.get((recipient_id, r.id)) or RuleUse()
            ahead = sum(1 for w in waiting if r.applies_to(w.channel, w.purpose))
            uses[r.id] = RuleUse(base.count, base.oldest, ahead, self.taken[(recipient_id, r.id)])

        kth_oldest = partial(_kth_oldest_cleared, recipient_id=recipient_id, at=at)

        decision = decide(
            self.policy,
            tz=_zone(self.tz.get(recipient_id, "UTC")),
            opted_out=(recipient_id, channel, purpose) in self.opted_out,
            channel=channel,
            purpose=purpose,
            expires_at=expires_at,
            deliver_after=deliver_after,
            at=at,
            uses=uses,
            kth_oldest=kth_oldest,
        )
        if pk is not None:
            self.done.add(pk)
        if decision.status == MessageStatus.ACCEPTED:
            for r in self.policy.rules_for(channel, purpose):
                self.taken[(recipient_id, r.id)] += 1
        return decision


def messages_decide_bulk(*, drafts: Sequence[MessageDraft], at: datetime) -> list[Message]:
    """Decide and record many messages at once, set-based (campaigns, due journey steps).

    Same decisions as message_decide for each draft, in input order per recipient; locks the recipients'
    rows in id order within one transaction. Returns the Messages in the order of `drafts`.
    """
    if not drafts:
        return []
    policy = policy_current()
    with transaction.atomic():
        batch = _Batch(policy=policy, at=at, recipient_ids=(d.recipient_id for d in drafts), lock=True)
        rows = []
        for d in drafts:
            decision = batch.decide(
                recipient_id=d.recipient_id,
                channel=d.channel,
                purpose=d.purpose,
                priority=d.priority,
                expires_at=d.expires_at,
                deliver_after=d.deliver_after,
            )
            rows.append(
                {
                    "recipient_id": d.recipient_id,
                    "channel": d.channel,
                    "purpose": d.purpose,
                    "content": d.content,
                    "priority": d.priority,
                    "expires_at": d.expires_at,
                    "source": d.source,
                    "source_ref": d.source_ref,
                    "requested_channel": d.requested_channel or d.channel,
                    "channel_reason": d.channel_reason,
                    "warnings": d.warnings,
                    "to_address": d.to_address,
                    "created_at": at,
                    "updated_at": at,
                    **_decision_fields(decision, at=at, deliver_after=d.deliver_after),
                }
            )
        return _messages_insert_many(rows)


def _messages_insert_many(rows: list[dict[str, Any]]) -> list[Message]:
    """Insert many Messages; on PostgreSQL with COPY and ids drawn from the sequence up front (the
    ORM's bulk_create spent most of a blast preparing values)."""
    attnames = [f.attname for f in Message._meta.concrete_fields if not f.primary_key]
    defaults = _message_defaults()
    ordered = [[row[a] if a in row else defaults[a] for a in attnames] for row in rows]
    if connection.vendor != "postgresql":
        return Message.objects.bulk_create(
            [Message(**dict(zip(attnames, values, strict=True))) for values in ordered], batch_size=1000
        )
    import psycopg

    json_at = [n for n, a in enumerate(attnames) if a in {"content", "warnings"}]
    dumped: dict[int, str] = {}  # a campaign shares one content dict: dump it once

    def as_json(value) -> str:
        key = id(value)
        if key not in dumped:
            dumped[key] = json.dumps(value)
        return dumped[key]

    columns = ", ".join(connection.ops.quote_name(f.column) for f in Message._meta.concrete_fields)
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [MESSAGE_TABLE, len(rows)],
        )
        ids = sorted(row[0] for row in cursor.fetchall())
        with cursor.copy(f"COPY {MESSAGE_TABLE} ({columns}) FROM STDIN") as copy:
            for pk, values in zip(ids, ordered, strict=True):
                row = list(values)
                for n in json_at:
                    row[n] = as_json(row[n])
                copy.write_row([pk, *row])
    return [_message_loaded(pk, attnames, values) for pk, values in zip(ids, ordered, strict=True)]


def _message_loaded(pk: int, attnames: list[str], values: list) -> Message:
    """A Message instance for a row just written, like Model.from_db but without __init__'s per-field
    descriptor work (a blast builds 100k of them; no init signals are connected for Message)."""
    message = Message.__new__(Message)
    message.__dict__.update(zip(attnames, values, strict=True))
    message.id = pk
    message._state = ModelState()
    message._state.adding, message._state.db = False, connection.alias
    return message


# ---- the re-drive of deferred messages -----------------------------------------------------------

REDECIDE_FIELDS = [
    "status",
    "rule",
    "reason",
    "deliver_after",
    "decided_at",
    "accepted_at",
    "suppressed_at",
    "expired_at",
    "updated_at",
]


def _held_release(*, now: datetime) -> int:
    """Make due again the messages held for a pause that is no longer active (a stale cache may have
    held one just after a resume)."""
    paused = ChannelPause.objects.filter(resumed_at__isnull=True, mode=PauseMode.DEFER).values("channel")
    return (
        Message.objects.filter(status=MessageStatus.DEFERRED, deliver_after__isnull=True)
        .exclude(channel__in=paused)
        .update(deliver_after=now)
    )


def deferred_redrive(*, now: datetime, limit: int) -> int:
    """Due work: re-decide deferred messages whose time came (deliver_after <= now).

    Claims them in batches with FOR UPDATE SKIP LOCKED (several passes may run at once), in queue order
    (recipient, priority desc, oldest first); expires those past expires_at, accepts or defers the rest
    again, and sends message_status_changed for every status change inside the transaction (the
    channels app enqueues delivery of accepted ones on commit). Returns how many it handled.
    """
    _held_release(now=now)
    policy = policy_current()
    handled = 0
    while handled < limit:
        size = min(REDRIVE_BATCH, limit - handled)
        with transaction.atomic():
            claimed = list(
                Message.objects.select_for_update(skip_locked=True)
                .filter(
                    # Due, or held by a pause (no time) but already past its expiry: expire it now.
                    Q(deliver_after__lte=now) | Q(deliver_after__isnull=True, expires_at__lte=now),
                    status=MessageStatus.DEFERRED,
                )
                .order_by("recipient_id", "-priority", "created_at", "id")[:size]
            )
            if not claimed:
                break
            batch = _Batch(policy=policy, at=now, recipient_ids=(m.recipient_id for m in claimed), lock=True)
            changed = []
            for m in claimed:
                try:
                    decision = batch.decide(
                        recipient_id=m.recipient_id,
                        channel=m.channel,
                        purpose=m.purpose,
                        priority=m.priority,
                        expires_at=m.expires_at,
                        created_at=m.created_at,
                        pk=m.pk,
                    )
                except Exception as exc:  # noqa: BLE001 - one bad row must not stop the re-drive
                    # Never sent, and it says why (an out-of-range time overflowing the arithmetic...).
                    logger.exception("deferred message %s could not be re-decided; suppressed", m.pk)
                    why = f"Could not be decided ({type(exc).__name__}: {exc}); it will not be sent."
                    decision = Decision(MessageStatus.SUPPRESSED, "error", why[:1000])
                previous = m.status
                m.status, m.rule, m.reason = decision.status, decision.rule, decision.reason
                m.decided_at = m.updated_at = now
                if decision.status == MessageStatus.DEFERRED:
                    m.deliver_after = decision.deliver_after
                else:
                    setattr(m, STATUS_STAMP[decision.status], now)
                if m.status != previous:
                    changed.append((m, previous))
            Message.objects.bulk_update(claimed, REDECIDE_FIELDS, batch_size=REDRIVE_BATCH)
            for m, previous in changed:
                message_status_changed.send(sender=Message, message=m, previous=previous)
        handled += len(claimed)
        if len(claimed) < size:
            break
    return handled


# ---- channel pauses ------------------------------------------------------------------------------


class PauseError(ValueError):
    """Bad pause input: `field` and a plain reason."""

    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field, self.detail = field, detail


def channel_pause(
    *, channel: str, mode: str = PauseMode.DEFER, note: str = "", by: str = "", at: datetime | None = None
) -> ChannelPause:
    """Pause a channel (defer: held until resumed; suppress: never sent), or change an active pause."""
    if channel not in Channel.values:
        raise PauseError("channel", f"Unknown channel {channel!r}; expected one of {CHANNELS_TEXT}.")
    if mode not in PauseMode.values:
        raise PauseError("mode", f"Unknown mode {mode!r}; expected defer or suppress.")
    at = at or timezone.now()
    with transaction.atomic():
        pause = ChannelPause.objects.select_for_update().filter(channel=channel, resumed_at=None).first()
        if pause is None:
            pause = ChannelPause.objects.create(
                channel=channel, mode=mode, note=note, paused_by=by, paused_at=at
            )
        else:
            pause.mode, pause.note = mode, note or pause.note
            pause.save(update_fields=["mode", "note"])
    policy_cache_clear()
    return pause


def channel_resume(*, channel: str, by: str = "", at: datetime | None = None) -> int:
    """Resume a paused channel; the messages it held become due now. Returns how many were held."""
    if channel not in Channel.values:
        raise PauseError("channel", f"Unknown channel {channel!r}; expected one of {CHANNELS_TEXT}.")
    at = at or timezone.now()
    with transaction.atomic():
        pauses = list(ChannelPause.objects.select_for_update().filter(channel=channel, resumed_at=None))
        for pause in pauses:
            pause.resumed_at, pause.resumed_by = at, by
            pause.save(update_fields=["resumed_at", "resumed_by"])
        held = Message.objects.filter(
            status=MessageStatus.DEFERRED, channel=channel, deliver_after__isnull=True
        ).update(deliver_after=at, updated_at=at)
    policy_cache_clear()
    return held
