"""Database plumbing shared by the hot, set-based paths: one function per operation, each hiding its
PostgreSQL / SQLite pair (the embedded SQLite of `make run` takes the portable branch)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager, nullcontext
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


def id_array(ids: Iterable[int]) -> str:
    """Integer ids as one PostgreSQL array literal (`'{1,2,3}'`, cast to bigint[] in the statement).
    psycopg dumps a Python list element by element in Python (1-2 ms per thousand ids); this is one join."""
    return "{" + ",".join(map(str, map(int, ids))) + "}"


def ids_in(column: str, ids: Sequence[int]) -> tuple[str, list]:
    """`column` among integer `ids`: one array parameter on PostgreSQL, an IN list elsewhere."""
    if is_postgres():
        return f"{column} = ANY(%s::bigint[])", [id_array(ids)]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", list(ids)


def ids_in_named(column: str, ids: Sequence[int], name: str = "ids") -> tuple[str, dict]:
    """`ids_in` with named parameters (for statements that mix it with other named values)."""
    if is_postgres():
        return f"{column} = ANY(%({name})s::bigint[])", {name: id_array(ids)}
    names = {f"{name}{k}": v for k, v in enumerate(ids)}
    return f"{column} IN ({', '.join(f'%({n})s' for n in names)})", names


def as_datetime(value) -> datetime | None:
    """An aware datetime from a raw cursor's value (SQLite gives text, or a naive datetime in UTC)."""
    if value is None:
        return None
    if type(value) is datetime and value.tzinfo is not None:  # psycopg's, the common case
        return value
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


def _json_wire(types: Sequence[str]):
    """The binary COPY wire form of JSON values, dumped with orjson once per value object: jsonb's is a
    version byte (1) then the JSON text, json's the text alone. The cache keeps each value referenced,
    so an id is never reused by another object while the COPY runs."""
    import orjson

    cache: dict[int, tuple[Any, bytes]] = {}
    versions = {"jsonb": b"\x01", "json": b""}

    def wire(value, prefix: bytes) -> bytes | None:
        if value is None:
            return None
        hit = cache.get(id(value))
        if hit is None:
            hit = cache[id(value)] = (value, prefix + orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
        return hit[1]

    return [(n, versions[t]) for n, t in enumerate(types) if t in versions], wire


def rows_copy(
    *, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], json_at: Iterable[int] = ()
):
    """COPY rows into a PostgreSQL table (the fastest bulk insert there is), in the binary format with
    each column's type (a third of the text format's formatting work here, and no parsing there). JSON
    values are written in jsonb's binary wire form by orjson (psycopg's JSON dumper calls back into Python
    for every value); a value object shared by many rows (a campaign's content, a batch's common warnings)
    is dumped once. `json_at` is kept for callers: the types say which columns are JSON."""
    import psycopg

    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    connection.ensure_connection()
    types = _column_types(table, tuple(columns))
    json_columns, wire = _json_wire(types)
    if json_columns:
        # Already in the wire form: psycopg sends the bytes as they are.
        types = ["bytea" if t in ("jsonb", "json") else t for t in types]
    with (
        connection.wrap_database_errors,
        psycopg.Cursor(connection.connection) as cursor,
        cursor.copy(f"COPY {table} ({quoted}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(types)
        if not json_columns:
            for row in rows:
                copy.write_row(row)
            return
        for row in rows:
            row = list(row)
            for n, prefix in json_columns:
                row[n] = wire(row[n], prefix)
            copy.write_row(row)


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


def rows_insert(*, model: Any, fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Any]:
    """Insert rows (values of `fields`, as the database takes them, every NOT NULL column named) and
    return their primary keys in order: one `INSERT ... SELECT FROM unnest(typed arrays) RETURNING` on
    PostgreSQL, with no model instances (bulk_create's per-object work cost more than the statement)
    and the arrays bound in binary; bulk_create elsewhere."""
    if not rows:
        return []
    if not is_postgres():
        objs = model.objects.bulk_create([model(**dict(zip(fields, row, strict=True))) for row in rows])
        return [o.pk for o in objs]
    meta = model._meta
    q = connection.ops.quote_name
    columns = tuple(meta.get_field(f).column for f in fields)
    arrays = ", ".join(f"%b::{t}[]" for t in _column_types(meta.db_table, columns))
    names = ", ".join(q(c) for c in columns)
    sql = (
        f"INSERT INTO {q(meta.db_table)} ({names}) SELECT {names} FROM unnest({arrays}) AS v({names})"
        f" RETURNING {q(meta.pk.column)}"
    )
    with hot_cursor() as (cursor, prepare):
        cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)], **prepare)
        return [row[0] for row in cursor.fetchall()]


def objects_update(
    *, objs: Sequence[Any], fields: Sequence[str], expect: tuple[str, Sequence[Any]] | None = None
) -> int | set[Any]:
    """Write `fields` of model instances already loaded (and changed in memory): `bulk_update`'s
    set-based twin for PostgreSQL, one `UPDATE ... FROM unnest(typed arrays)` (Django's bulk_update
    builds a CASE per field and row: it spent seconds per thousand rows). Plain columns only (no JSON);
    on SQLite, bulk_update. Returns the rows written.

    With `expect` = (field, one value per object), a row is written only where that column still holds
    the expected value (it waits for a concurrent writer's lock, then looks again): for rows the caller
    read without a lock. Returns the primary keys written then."""
    if not objs:
        return set() if expect else 0
    model = type(objs[0])
    if not is_postgres():
        if expect is not None:
            name, values = expect
            wanted = {o.pk: v for o, v in zip(objs, values, strict=True)}
            now = dict(model.objects.filter(pk__in=list(wanted)).values_list("pk", name))
            objs = [o for o in objs if o.pk in now and now[o.pk] == wanted[o.pk]]
            model.objects.bulk_update(objs, fields, batch_size=500)
            return {o.pk for o in objs}
        return model.objects.bulk_update(objs, fields, batch_size=500)
    written = [model._meta.get_field(f) for f in fields]
    columns = [[o.pk for o in objs]] + [_prepared(f, [getattr(o, f.attname) for o in objs]) for f in written]
    if expect is None:
        return _unnest_update(model, written, columns)
    field = model._meta.get_field(expect[0])
    return _unnest_update(model, written, [*columns, _prepared(field, list(expect[1]))], expect=field)


def values_update(
    *, model: Any, fields: Sequence[str], pks: Sequence[Any], values: Sequence[Sequence]
) -> int:
    """`objects_update` for rows the caller holds as values, not instances: `pks[i]`'s `fields` get
    `values[k][i]` (one sequence per field, as the database takes them). Returns the rows written."""
    if not pks:
        return 0
    if not is_postgres():
        objs = []
        for n, pk in enumerate(pks):
            obj = model(pk=pk, **{f: column[n] for f, column in zip(fields, values, strict=True)})
            obj._state.adding = False
            objs.append(obj)
        return model.objects.bulk_update(objs, fields, batch_size=500)
    written = [model._meta.get_field(f) for f in fields]
    return _unnest_update(model, written, [list(pks), *(list(v) for v in values)])


def _unnest_update(model: Any, written: list, columns: list[list], expect: Any = None) -> Any:
    meta = model._meta
    table, pk = meta.db_table, meta.pk
    names = (pk.column, *(f.column for f in written))
    q = connection.ops.quote_name
    types = _column_types(table, (*names, expect.column) if expect is not None else names)
    arrays = ", ".join(f"%b::{t}[]" for t in types)
    aliases = ", ".join(q(c) for c in names) + (", expected__" if expect is not None else "")
    sql = (
        f"UPDATE {q(table)} SET {', '.join(f'{q(c)} = v.{q(c)}' for c in names[1:])}"
        f" FROM unnest({arrays}) AS v({aliases})"
        f" WHERE {q(table)}.{q(pk.column)} = v.{q(pk.column)}"
    )
    if expect is not None:
        sql += f" AND {q(table)}.{q(expect.column)} = v.expected__ RETURNING {q(table)}.{q(pk.column)}"
    # Server-side binding, arrays in binary (%b): the text format quoted every string element with a
    # regular expression, five times the time for a batch of 500.
    with hot_cursor() as (cursor, prepare):
        cursor.execute(sql, columns, **prepare)
        return cursor.rowcount if expect is None else {row[0] for row in cursor.fetchall()}


# Values whose database form depends on nothing but the value (and, for datetimes, their zone).
_PLAIN_TYPES = frozenset({str, int, bool, type(None), datetime})


def _prepared(field: Any, values: list) -> list:
    """`field.get_db_prep_save` of each value, computed once per distinct plain value: a batch's rows
    mostly share their status, timestamps and empty strings (the call cost microseconds per value)."""
    prep = field.get_db_prep_save
    done: dict = {}
    out = []
    for value in values:
        cls = value.__class__
        if cls not in _PLAIN_TYPES:
            out.append(prep(value, connection))
            continue
        key = (cls, value, value.tzinfo) if cls is datetime else (cls, value)
        if key not in done:
            done[key] = prep(value, connection)
        out.append(done[key])
    return out
