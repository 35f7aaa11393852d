"""Which messages a cap rule counts — written once, here — and the statements that count them.

A rule counts a recipient's cleared messages (those with an `accepted_at`) whose purpose it names, on its
channels (all when it names none), cleared after `at - window`.

The window has no upper bound, deliberately. Every decision runs in READ COMMITTED and first takes the
recipient's row lock (`SELECT ... FOR UPDATE`), which waits for any transaction deciding for the same
person; each message that counts was written by such a transaction while it held that lock. The counting
statement runs *after* the lock statement returned, so its own snapshot (taken when it starts) sees every
message committed by anyone who held the lock before us — including one stamped later than our `at`,
because its caller read the clock after ours but reached the lock first. Bounding the window above by
`at` (as the first version did) dropped exactly those and let two racing sends pass a cap of one slot.
The lock statement's own snapshot is older (taken before it waited), which is why the count is a
separate statement. The same holds for the set-based decisions (governor.bulk) and the re-drive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from orchestrator.db import as_datetime, hot_cursor
from orchestrator.models import Message

from .policy import Rule

MESSAGE_TABLE = Message._meta.db_table


def _names(prefix: str, values, static: dict[str, str]) -> str:
    names = []
    for k, value in enumerate(sorted(values)):
        static[f"{prefix}{k}"] = value
        names.append(f"%({prefix}{k})s")
    return ", ".join(names)


def rule_match_sql(rule: Rule, n: int, static: dict[str, str]) -> str:
    """The messages `rule` (the n-th of a statement) counts and limits: its purposes, on its channels.
    Constants go into `static` as named parameters."""
    match = f"purpose IN ({_names(f'r{n}p', rule.purposes, static)})"
    if rule.channels:
        match += f" AND channel IN ({_names(f'r{n}c', rule.channels, static)})"
    return match


def rule_window_sql(rule: Rule, n: int, static: dict[str, str]) -> str:
    """Counted by `rule` at decision time: cleared after `%(from{n})s` (no upper bound: see the module)."""
    return f"accepted_at > %(from{n})s AND {rule_match_sql(rule, n, static)}"


def window_params(rules: Sequence[Rule], at: datetime) -> dict[str, datetime]:
    """The per-rule window starts and the widest one (`from`), for the statements below."""
    params = {f"from{n}": at - r.window for n, r in enumerate(rules)}
    params["from"] = at - max(r.window for r in rules)
    return params


@lru_cache(maxsize=64)
def recipient_uses_sql(rules: tuple[Rule, ...]) -> tuple[str, dict[str, str]]:
    """One aggregate statement for one recipient: per rule, the count and the oldest of its window, and
    the due deferred messages ahead of this one in the queue (priority arbitration).

    Named parameters: each value (at, the priority, a purpose) is sent once however often it is used.
    """
    columns, static = [], {}
    ahead = (
        "status = 'deferred' AND deliver_after <= %(at)s AND (expires_at IS NULL OR expires_at > %(at)s)"
        " AND (priority > %(priority)s OR (priority = %(priority)s AND created_at <= %(at)s))"
    )
    for n, rule in enumerate(rules):
        window = rule_window_sql(rule, n, static)
        columns += [
            f"COUNT(*) FILTER (WHERE {window})",
            f"MIN(accepted_at) FILTER (WHERE {window})",
            f"COUNT(*) FILTER (WHERE {ahead} AND {rule_match_sql(rule, n, static)})",
        ]
    sql = (
        f"SELECT {', '.join(columns)} FROM {MESSAGE_TABLE} WHERE recipient_id = %(recipient)s"
        " AND (accepted_at > %(from)s OR (status = 'deferred' AND deliver_after <= %(at)s))"
    )
    return sql, static


@lru_cache(maxsize=64)
def recipients_uses_sql(rules: tuple[Rule, ...], ids_sql: str) -> tuple[str, dict[str, str]]:
    """The same windows for many recipients at once, grouped by recipient (the set-based decisions)."""
    columns, static = [], {}
    for n, rule in enumerate(rules):
        window = rule_window_sql(rule, n, static)
        columns += [f"COUNT(*) FILTER (WHERE {window})", f"MIN(accepted_at) FILTER (WHERE {window})"]
    sql = (
        f"SELECT recipient_id, {', '.join(columns)} FROM {MESSAGE_TABLE}"
        f" WHERE {ids_sql} AND accepted_at > %(from)s GROUP BY recipient_id"
    )
    return sql, static


@lru_cache(maxsize=64)
def _kth_sql(rule: Rule) -> tuple[str, dict[str, str]]:
    static: dict[str, str] = {}
    window = rule_window_sql(rule, 0, static)
    sql = (
        f"SELECT accepted_at FROM {MESSAGE_TABLE} WHERE recipient_id = %(recipient)s AND {window}"
        " ORDER BY accepted_at LIMIT 1 OFFSET %(skip)s"
    )
    return sql, static


def kth_oldest_cleared(rule: Rule, k: int, *, recipient_id: int, at: datetime) -> datetime:
    """When the k-th oldest message counted by `rule` was cleared (its slot frees a window later)."""
    sql, static = _kth_sql(rule)
    with hot_cursor() as (cursor, prepare):
        cursor.execute(
            sql, {**static, "recipient": recipient_id, "from0": at - rule.window, "skip": k - 1}, **prepare
        )
        return as_datetime(cursor.fetchone()[0])
