"""Database plumbing shared by the hot, set-based paths: one function per operation, each hiding its
PostgreSQL / SQLite pair (the embedded SQLite of `make run` takes the portable branch)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def hot_cursor():
    """A cursor for per-message statements, and the extra execute() keywords to pass it.

    On PostgreSQL a psycopg cursor with server-side binding on the current (transactional) connection, so
    statements are prepared once per connection instead of parsed and planned per call; elsewhere
    Django's own cursor. Errors surface as django.db exceptions either way.
    """
    if is_postgres():
        import psycopg

        connection.ensure_connection()
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            yield cursor, {"prepare": True}
    else:
        with connection.cursor() as cursor:
            yield cursor, {}


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


def rows_copy(
    *, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], json_at: Iterable[int] = ()
):
    """COPY rows into a PostgreSQL table (the fastest bulk insert there is). JSON columns (by position)
    are dumped here; a value object shared by many rows (a campaign's content) is dumped once."""
    import psycopg

    json_at = list(json_at)
    dumped: dict[int, str] = {}

    def as_json(value) -> str:
        key = id(value)
        if key not in dumped:
            dumped[key] = json.dumps(value)
        return dumped[key]

    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    connection.ensure_connection()
    with (
        connection.wrap_database_errors,
        psycopg.Cursor(connection.connection) as cursor,
        cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy,
    ):
        for row in rows:
            if json_at:
                row = list(row)
                for n in json_at:
                    row[n] = as_json(row[n])
            copy.write_row(row)


def sequence_next(*, table: str, count: int) -> list[int]:
    """`count` ids drawn from a PostgreSQL table's id sequence, ascending."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, count]
        )
        return sorted(row[0] for row in cursor.fetchall())
