"""Database plumbing shared by the hot, set-based paths: one function per operation, each hiding its
PostgreSQL / SQLite pair (the embedded SQLite of `make run` takes the portable branch)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


class _LoggedCursor:
    """A psycopg cursor that records its statements in Django's query log (as CursorDebugWrapper does),
    so CaptureQueriesContext and django_assert_max_num_queries count the hot path's statements too."""

    def __init__(self, cursor):
        self._cursor = cursor

    def execute(self, sql, params=None, **kwargs):
        start = time.monotonic()
        try:
            return self._cursor.execute(sql, params, **kwargs)
        finally:
            connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - start:.3f}"})

    def __getattr__(self, name):
        return getattr(self._cursor, name)


@contextmanager
def hot_cursor():
    """A cursor for per-message statements, and the extra execute() keywords to pass it.

    On PostgreSQL a psycopg cursor with server-side binding on the current (transactional) connection, so
    statements are prepared once per connection instead of parsed and planned per call; elsewhere
    Django's own cursor. Errors surface as django.db exceptions either way.
    """
    db = connections[DEFAULT_DB_ALIAS]  # this thread's connection, looked up once (not per attribute)
    if db.vendor == "postgresql":
        import psycopg

        db.ensure_connection()
        with db.wrap_database_errors, psycopg.Cursor(db.connection) as cursor:
            yield (_LoggedCursor(cursor) if db.queries_logged else cursor), {"prepare": True}
    else:
        with db.cursor() as cursor:
            yield cursor, {}


def hot_atomic():
    """The caller's transaction when there is one (no savepoint: a failure fails the caller's whole
    action, which is what one action = one transaction means), else a new one."""
    return nullcontext() if connection.in_atomic_block else transaction.atomic()


def ids_in(column: str, ids: Sequence[int]) -> tuple[str, list]:
    """`column` among `ids`: one array parameter on PostgreSQL, an IN list elsewhere."""
    if is_postgres():
        return f"{column} = ANY(%s)", [list(ids)]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", list(ids)


def ids_in_named(column: str, ids: Sequence[int], name: str = "ids") -> tuple[str, dict]:
    """`ids_in` with named parameters (for statements that mix it with other named values)."""
    if is_postgres():
        return f"{column} = ANY(%({name})s)", {name: list(ids)}
    names = {f"{name}{k}": v for k, v in enumerate(ids)}
    return f"{column} IN ({', '.join(f'%({n})s' for n in names)})", names


def as_datetime(value) -> datetime | None:
    """An aware datetime from a raw cursor's value (SQLite gives text, or a naive datetime in UTC)."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else parse_datetime(value)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


@lru_cache(maxsize=32)
def _column_types(table: str, columns: tuple[str, ...]) -> list[str]:
    """The PostgreSQL types of a table's columns, as binary COPY needs them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [table],
        )
        found = dict(cursor.fetchall())
    return [found[c] for c in columns]


# JSON already written during the current COPY, by the id of the value object (see rows_copy).
_copy_json: ContextVar[dict[int, bytes] | None] = ContextVar("copy_json", default=None)


def _copy_json_dumps(value) -> bytes:
    """psycopg's JSON dumps during rows_copy: orjson, once per value object. (A module function: psycopg
    caches one dumper per dumps function.)"""
    import orjson

    dumped = _copy_json.get()
    key = id(value)  # the rows hold every value for the whole COPY: ids are not reused meanwhile
    text = dumped.get(key) if dumped is not None else None
    if text is None:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        if dumped is not None:
            dumped[key] = text
    return text


def rows_copy(
    *, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], json_at: Iterable[int] = ()
):
    """COPY rows into a PostgreSQL table (the fastest bulk insert there is), in the binary format with
    each column's type (a third of the text format's formatting work here, and no parsing there). JSON
    values are dumped with orjson; a value object shared by many rows (a campaign's content, a batch's
    common warnings) is dumped once. `json_at` is kept for callers: the types say which columns are JSON."""
    import psycopg
    from psycopg.types.json import set_json_dumps

    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    connection.ensure_connection()
    types = _column_types(table, tuple(columns))
    token = _copy_json.set({})
    try:
        with (
            connection.wrap_database_errors,
            psycopg.Cursor(connection.connection) as cursor,
        ):
            set_json_dumps(_copy_json_dumps, context=cursor)
            with cursor.copy(f"COPY {table} ({quoted}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
    finally:
        _copy_json.reset(token)


@lru_cache(maxsize=16)
def _sequence_of(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
        return cursor.fetchone()[0]


def sequence_next(*, table: str, count: int) -> list[int]:
    """`count` ids drawn from a PostgreSQL table's id sequence, ascending."""
    with connection.cursor() as cursor:
        # The sequence named once (a constant): pg_get_serial_sequence per row cost more than nextval.
        cursor.execute(
            "SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [_sequence_of(table), count]
        )
        return sorted(row[0] for row in cursor.fetchall())


def objects_update(*, objs: Sequence[Any], fields: Sequence[str]) -> int:
    """Write `fields` of model instances already loaded (and changed in memory): `bulk_update`'s
    set-based twin for PostgreSQL, one `UPDATE ... FROM unnest(typed arrays)` (Django's bulk_update
    builds a CASE per field and row: it spent seconds per thousand rows). Plain columns only (no JSON);
    on SQLite, bulk_update. Returns the rows written."""
    if not objs:
        return 0
    model = type(objs[0])
    if not is_postgres():
        return model.objects.bulk_update(objs, fields, batch_size=500)
    meta = model._meta
    table, pk = meta.db_table, meta.pk
    written = [meta.get_field(f) for f in fields]
    columns = (pk.column, *(f.column for f in written))
    q = connection.ops.quote_name
    arrays = ", ".join(f"%s::{t}[]" for t in _column_types(table, columns))
    sql = (
        f"UPDATE {q(table)} SET {', '.join(f'{q(c)} = v.{q(c)}' for c in columns[1:])}"
        f" FROM unnest({arrays}) AS v({', '.join(q(c) for c in columns)})"
        f" WHERE {q(table)}.{q(pk.column)} = v.{q(pk.column)}"
    )
    params = [[o.pk for o in objs]] + [
        [f.get_db_prep_save(getattr(o, f.attname), connection) for o in objs] for f in written
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
