"""Writes on the one history table: new messages with their first decision, later decisions, and every
status move, checked against the one table of legal moves (`models.MESSAGE_TRANSITIONS`).

Every write here tells listeners through `message_status_changed` (a new message has previous = ""; a
set-based insert of new messages sends `messages_created` once for all of them instead), inside
the caller's transaction: the channels app enqueues delivery of what became accepted, journeys wake the
enrollment whose deferred send moved on. Nobody else writes Message rows or their status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

from django.db import connection
from django.db.models.base import ModelState

from .db import hot_cursor, is_postgres, objects_update, rows_copy, sequence_next
from .models import MESSAGE_TRANSITIONS, Message, MessageDecision
from .signals import message_status_changed, messages_created

MESSAGE_TABLE = Message._meta.db_table
DECISION_TABLE = MessageDecision._meta.db_table
DECISION_FIELDS = ("at", "outcome", "rule", "reason", "used", "limit", "window", "next_slot")


class IllegalTransition(ValueError):
    """A status move the table of legal moves does not allow (a bug in the caller, never user input)."""


def status_move_check(*, previous: str, status: str) -> None:
    if status not in MESSAGE_TRANSITIONS.get(previous, ()):
        raise IllegalTransition(f"A message cannot move from {previous} to {status}.")


_STAMPS: dict[str, str] = {}


def stamp_field(status: str) -> str:
    """The per-status timestamp column (`accepted_at`, `deferred_at`, ...)."""
    found = _STAMPS.get(status)
    if found is None:
        # Keyed as given: a MessageStatus member does not hash like its value.
        found = _STAMPS[status] = f"{status}_at"
    return found


# --- new messages --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _message_columns() -> tuple[list[str], frozenset[str], dict[str, Any]]:
    """Message's attnames (without id), the JSON ones, and the constant defaults of the others."""
    fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    attnames = [f.attname for f in fields]
    json_fields = frozenset(f.attname for f in fields if f.get_internal_type() == "JSONField")
    defaults = {f.attname: f.get_default() for f in fields if not (f.has_default() and callable(f.default))}
    return attnames, json_fields, defaults


def _message_adopt(row: dict[str, Any], alias: str) -> Message:
    """A Message instance for a row just written, from its full row dict (every attname and the id, handed
    over by the caller): like Model.from_db without __init__'s per-field descriptor work (a blast builds
    100k of them; no init signals are connected for Message)."""
    message = Message.__new__(Message)
    state = row["_state"] = ModelState()
    state.adding, state.db = False, alias
    message.__dict__ = row
    return message


def messages_partial(rows: Iterable[dict[str, Any]]) -> list[Message]:
    """Messages for rows the caller read in part (values by attname, with "id"), e.g. to move their
    status in bulk: no __init__ per instance; a field one lacks loads from the database on first access
    (Django's deferred fields), so a listener reading more still sees the row."""
    alias = connection.alias
    return [_message_adopt(row, alias) for row in rows]


@lru_cache(maxsize=64)
def _insert_sql(present: tuple[str, ...], decision: tuple[str, ...] | None) -> str:
    """INSERT of the columns that have a value (NULLs are left to the column): a handful of shapes. With a
    decision, one statement writes both rows (a data-modifying CTE): one round trip, not two."""
    columns = {f.attname: connection.ops.quote_name(f.column) for f in Message._meta.concrete_fields}
    sql = (
        f"INSERT INTO {MESSAGE_TABLE} ({', '.join(columns[a] for a in present)})"
        f" VALUES ({', '.join(['%s'] * len(present))}) RETURNING id"
    )
    if decision is None:
        return sql
    named = {f.attname: connection.ops.quote_name(f.column) for f in MessageDecision._meta.concrete_fields}
    names = ", ".join(named[a] for a in decision)
    return (
        f"WITH m AS ({sql}) INSERT INTO {DECISION_TABLE} (message_id, {names})"
        f" SELECT m.id, {', '.join(['%s'] * len(decision))} FROM m RETURNING message_id"
    )


def _insert_one(cursor, prepare: dict, *, values: Mapping[str, Any], decision, json_fields) -> int:
    """One message (and its first decision) on PostgreSQL, as a prepared statement."""
    from psycopg.types.json import Jsonb

    present = tuple([a for a, v in values.items() if v is not None])
    params = [Jsonb(values[a]) if a in json_fields else values[a] for a in present]
    shape = None
    if decision is not None:
        shape = tuple([a for a, v in decision.items() if v is not None])
        params += [decision[a] for a in shape]
    cursor.execute(_insert_sql(present, shape), params, **prepare)
    return cursor.fetchone()[0]


def messages_insert(
    *,
    rows: Sequence[Mapping[str, Any]],
    decisions: Sequence[Mapping[str, Any] | None],
    hot: tuple | None = None,
) -> list[Message]:
    """Insert new messages, each with its first decision (or None, e.g. a send recorded from elsewhere),
    and tell listeners. Inside the caller's transaction; returns the Messages in the order of `rows`.

    One row: one prepared INSERT (the API's hot path; `hot`: the caller's own `hot_cursor()`, to reuse).
    Many: COPY with ids drawn up front on PostgreSQL (the ORM's bulk_create spent most of a blast preparing
    values); bulk_create on SQLite.
    """
    if not rows:
        return []
    attnames, json_fields, defaults = _message_columns()
    for status in {row.get("status", defaults.get("status")) for row in rows}:
        status_move_check(previous="", status=status)
    if len(rows) == 1 and is_postgres():
        full = [{**defaults, **rows[0]}]
        with nullcontext(hot) if hot is not None else hot_cursor() as (cursor, prepare):
            pk = _insert_one(cursor, prepare, values=full[0], decision=decisions[0], json_fields=json_fields)
        row = full[0]
        row["id"] = pk
        messages = [_message_adopt(row, connection.alias)]  # every attname is in the row (defaults merged)
    elif is_postgres():
        ids = sequence_next(table=MESSAGE_TABLE, count=len(rows))
        full = [{**defaults, **row, "id": pk} for pk, row in zip(ids, rows, strict=True)]
        pick = itemgetter("id", *attnames)
        json_at = [n + 1 for n, a in enumerate(attnames) if a in json_fields]
        rows_copy(
            table=MESSAGE_TABLE,
            columns=["id", *(Message._meta.get_field(a).column for a in attnames)],
            rows=map(pick, full),
            json_at=json_at,
        )
        alias = connection.alias
        messages = [_message_adopt(row, alias) for row in full]
        _decisions_copy((pk, d) for pk, d in zip(ids, decisions, strict=True) if d is not None)
    else:
        full = [{**defaults, **row} for row in rows]
        messages = Message.objects.bulk_create([Message(**row) for row in full], batch_size=500)
        MessageDecision.objects.bulk_create(
            [
                MessageDecision(message_id=m.pk, **d)
                for m, d in zip(messages, decisions, strict=True)
                if d is not None
            ],
            batch_size=500,
        )
    if len(messages) == 1:
        message_status_changed.send(sender=Message, message=messages[0], previous="")
    else:
        messages_created.send(sender=Message, messages=messages)
    return messages


def _is_time(field) -> bool:
    return field.get_internal_type() in ("DateTimeField", "DateField", "TimeField")


def messages_insert_select(
    *, select: str, params: Sequence[Any], columns: Sequence[str], conflict_skip: str | None = None
) -> list[Message]:
    """Insert new messages set-based from a query (PostgreSQL; e.g. over a staging table), without a
    first decision (sends recorded from elsewhere), and tell listeners. `select` yields the Message
    attnames `columns`, in that order; every other column takes its default. `conflict_skip` is an ON
    CONFLICT target (a unique index) whose conflicting rows are skipped. Inside the caller's
    transaction; returns the messages written. Their JSON and time fields are left to load on access
    (deferred, as with `.only()`): reading them back for a million rows cost more than the insert, and
    the listeners of a new message read its status and source."""
    attnames, json_fields, defaults = _message_columns()
    rest = [a for a in attnames if a not in columns]
    missing = [a for a in rest if a not in defaults]
    if missing:
        raise ValueError(f"No value and no constant default for {', '.join(missing)}.")
    quote = connection.ops.quote_name
    names = {f.attname: quote(f.column) for f in Message._meta.concrete_fields}
    fields = {f.attname: f for f in Message._meta.concrete_fields}
    returned = ["id", *(a for a in attnames if a not in json_fields and not _is_time(fields[a]))]
    sql = (
        f"INSERT INTO {MESSAGE_TABLE} ({', '.join(names[a] for a in [*columns, *rest])})"
        f" SELECT q.*{''.join(', %s' for _ in rest)} FROM ({select}) q"
        + (f" ON CONFLICT {conflict_skip} DO NOTHING" if conflict_skip else "")
        + f" RETURNING {', '.join(names[a] for a in returned)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*(defaults[a] for a in rest), *params])  # the outer SELECT comes first
        rows = cursor.fetchall()
    status_at = returned.index("status")
    for status in {row[status_at] for row in rows}:
        status_move_check(previous="", status=status)  # rolls the caller's transaction back
    alias = connection.alias
    messages = [_message_adopt(dict(zip(returned, row, strict=True)), alias) for row in rows]
    if len(messages) == 1:
        message_status_changed.send(sender=Message, message=messages[0], previous="")
    elif messages:
        messages_created.send(sender=Message, messages=messages)
    return messages


def _decisions_copy(pairs: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
    values: dict[int, tuple] = {}  # messages sharing one decision dict (a batch's memo) share its values

    def row(pk: int, d: Mapping[str, Any]) -> tuple:
        found = values.get(id(d))
        if found is None:
            found = values[id(d)] = (d, tuple(d.get(f) for f in DECISION_FIELDS))
        return (pk, *found[1])

    rows_copy(
        table=DECISION_TABLE,
        columns=["message_id", *(MessageDecision._meta.get_field(f).column for f in DECISION_FIELDS)],
        rows=(row(pk, d) for pk, d in pairs),
    )


def message_decisions_insert(*, pairs: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
    """Record later decisions (the re-drive): (message id, decision fields) each."""
    if not pairs:
        return
    if is_postgres():
        _decisions_copy(pairs)
    else:
        MessageDecision.objects.bulk_create(
            [MessageDecision(message_id=pk, **d) for pk, d in pairs], batch_size=500
        )


# --- status moves --------------------------------------------------------------------------------------


def message_status_move(
    *,
    message: Message,
    status: str,
    at: datetime,
    update_fields: Iterable[str] = (),
    stamp: bool = True,
) -> Message:
    """Move one message to `status` (a legal move), stamp its time (unless `stamp` is False: a dead
    letter retried keeps the accepted_at caps count), save, and tell listeners (inside the caller's
    transaction)."""
    previous = message.status
    status_move_check(previous=previous, status=status)
    stamps = set()
    if stamp:
        stamps.add(stamp_field(status))
        setattr(message, stamp_field(status), at)
    message.status = status
    message.save(update_fields=sorted({"status", "updated_at", *stamps, *update_fields}))
    message_status_changed.send(sender=Message, message=message, previous=previous)
    return message


def messages_status_move_bulk(
    *,
    moves: Sequence[tuple[Message, str]],
    at: datetime,
    update_fields: Iterable[str] = (),
    unlocked: bool = False,
) -> list[Message]:
    """The set-based `message_status_move` (the governor's re-drive, delivery's record): each message
    already carries its new status and fields in memory (a partial instance from `messages_partial` will
    do), `moves` pairs it with its previous status. Checks every move, stamps the ones that changed
    status, writes all rows in one statement per batch, and tells listeners of each change.

    `unlocked`: the caller holds no lock on the rows, so a message no longer in its previous status (a
    receipt or an operator moved it meanwhile) is left as it is; the statement writes only rows still
    in theirs (waiting for a concurrent writer first). Returns the messages moved."""
    if not moves:
        return []
    stamps = set()
    for message, previous in moves:
        status_move_check(previous=previous, status=message.status)
        if message.status != previous:
            stamp = stamp_field(message.status)
            setattr(message, stamp, at)
            stamps.add(stamp)
        message.updated_at = at
    fields = sorted({"status", "updated_at", *stamps, *update_fields})
    if unlocked:
        written = objects_update(
            objs=[m for m, _ in moves], fields=fields, expect=("status", [p for _, p in moves])
        )
        moves = [(m, p) for m, p in moves if m.pk in written]
    else:
        objects_update(objs=[m for m, _ in moves], fields=fields)
    for message, previous in moves:
        if message.status != previous:
            message_status_changed.send(sender=Message, message=message, previous=previous)
    return [m for m, _ in moves]


# --- erasure -------------------------------------------------------------------------------------------


ERASED = "[erased]"


def _scrubbed(column: str, identifiers: Sequence[str]):
    """`column` with every identifier replaced by ERASED (SQL replace(), on any database)."""
    from django.db.models import F, Value
    from django.db.models.functions import Replace

    expression = F(column)
    for identifier in identifiers:
        expression = Replace(expression, Value(identifier), Value(ERASED))
    return expression


def messages_erase(*, recipient_id: int, identifiers: Sequence[str], at: datetime) -> dict[str, int]:
    """Remove the personal part of one recipient's messages (orchestrator.erasure), keeping each row, its
    channel, purpose, source, status and timestamps so the governor's counts and the reports still add
    up. What is still waiting (accepted or deferred) is suppressed first: an erased person gets nothing.
    Set-based: one UPDATE per column group, inside the caller's transaction."""
    from django.db.models import CharField, Value
    from django.db.models.functions import Cast, Concat

    from .models import MessageStatus, Source

    waiting = list(
        Message.objects.filter(
            recipient_id=recipient_id, status__in=[MessageStatus.ACCEPTED, MessageStatus.DEFERRED]
        )
    )
    moves = []
    for message in waiting:
        previous, message.status = message.status, MessageStatus.SUPPRESSED
        message.rule, message.reason = "erasure", "The recipient was erased."
        moves.append((message, previous))
    messages_status_move_bulk(moves=moves, at=at, update_fields=["rule", "reason"])
    mine = Message.objects.filter(recipient_id=recipient_id)
    counts = {"messages": mine.count(), "messages_suppressed": len(moves)}
    mine.update(
        content={},
        warnings=[],
        to_address="",
        provider_message_id="",
        last_error="",
        reason=_scrubbed("reason", identifiers),
        channel_reason=_scrubbed("channel_reason", identifiers),
        updated_at=at,
    )
    # A send recorded from elsewhere keeps its (source_system, external_id) unique, without the id.
    mine.exclude(external_id="").update(
        external_id=Concat(Value("erased-"), Cast("id", output_field=CharField()))
    )
    # A caller's reference may name the person; journey and campaign references name the journey step.
    mine.exclude(source__in=[Source.JOURNEY, Source.CAMPAIGN]).exclude(source_ref="").update(source_ref="")
    counts["decisions"] = MessageDecision.objects.filter(message__recipient_id=recipient_id).update(
        reason=_scrubbed("reason", identifiers)
    )
    return counts
