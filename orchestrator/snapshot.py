"""The per-process snapshot of the team's sending settings: channel policies, cap rules, quiet hours,
pauses and the global holdout, read once into an immutable object and reused by every send.

Invalidation is a version, never a timer: `SettingsVersion` (one row) gets a new, never repeated value in
the same transaction as any edit of those tables (post_save/post_delete signals, and on PostgreSQL
statement-level triggers, so `.update()`, bulk and raw SQL edits count too). A request reads the version
once (one tiny prepared SELECT, at its first use of the snapshot) and reloads the snapshot only when it
changed; outside a request (tasks, commands, the shell) at every use (callers take the snapshot once).
The value comes from a sequence (random bits on SQLite), so a rolled-back edit can never leave a process
holding rows under a version that a later, different edit commits.

This module owns the mechanism and sits on the floor (it imports no other app of ours): each app registers
the loader of its part in its AppConfig.ready (`snapshot_part_register`) and reads that part back with
`snapshot_current().part(name)` (governor.policy.policy_current, channels_app.lint.channel_policy_views).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from django.core.signals import request_finished, request_started
from django.db import connection
from django.db.models.signals import post_delete, post_save

from .db import hot_cursor, is_postgres
from .models import SettingsVersion

VERSION_TABLE = SettingsVersion._meta.db_table
VERSION_SEQUENCE = "orchestrator_settings_version_seq"  # created by migration 0016 (PostgreSQL)
# The version as a scalar subquery, for a statement that can carry it (settings_version_note).
VERSION_SQL = f"(SELECT version FROM {VERSION_TABLE} WHERE id = 1)"

_loaders: dict[str, Callable[[], Any]] = {}


@dataclass(frozen=True)
class Snapshot:
    """Every registered part, loaded under one settings version."""

    version: int
    parts: MappingProxyType

    def part(self, name: str) -> Any:
        return self.parts[name]


class _State(threading.local):
    in_request = False
    scope: object = None  # what `version` was read for (this request)
    version: int | None = None


_state = _State()
_lock = threading.Lock()
_snapshot: Snapshot | None = None


def snapshot_part_register(*, name: str, loader: Callable[[], Any], models: tuple = ()) -> None:
    """Register a part of the snapshot and the models whose edits change it (their saves and deletes
    bump the version; on PostgreSQL their tables also carry the trigger, see the apps' migrations)."""
    _loaders[name] = loader
    for model in models:
        label = model._meta.label_lower
        post_save.connect(settings_version_bump, sender=model, dispatch_uid=f"snapshot-save-{label}")
        post_delete.connect(settings_version_bump, sender=model, dispatch_uid=f"snapshot-delete-{label}")


def settings_version_read() -> int:
    """The committed (or this transaction's) settings version: one prepared single-row SELECT."""
    with hot_cursor() as (cursor, prepare):
        cursor.execute(f"SELECT {VERSION_SQL}", **prepare)
        row = cursor.fetchone()
    return row[0] if row and row[0] is not None else 0


def settings_version_note(version: int) -> None:
    """A statement the request made anyway read the version too (the send's recipient lock, see
    VERSION_SQL): the request's first use of the snapshot takes it instead of reading it again."""
    if _state.in_request and _state.scope is not _REQUEST:
        _state.scope, _state.version = _REQUEST, version


def settings_version_bump(**_kwargs) -> None:
    """Give the settings a new version inside the current transaction (a signal receiver: any sender)."""
    if is_postgres():
        value_sql, params = f"nextval('{VERSION_SEQUENCE}')", []
    else:
        value_sql, params = "%s", [secrets.randbits(62)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {VERSION_TABLE} (id, version) VALUES (1, {value_sql})"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            params,
        )
    _state.version = None  # this request (or transaction) reads the new version at its next use


def snapshot_current() -> Snapshot:
    """The snapshot for the current settings version (loaded again only when the version moved)."""
    scope = _scope()
    version = _state.version if scope is not None and _state.scope is scope else None
    if version is None:
        version = settings_version_read()
        _state.scope, _state.version = scope, version
    return _snapshot_for(version)


def snapshot_unconfirmed() -> tuple[Snapshot, bool]:
    """The snapshot for a caller whose next statement reads the version anyway (VERSION_SQL), without a
    statement of its own: (snapshot, False) when this request already read the version, else the
    snapshot this process last loaded and True: the caller must pass the version its statement read to
    `snapshot_confirmed` before trusting it (the governor's single decision: its lock statement). The
    first use in a process loads it (one version read)."""
    scope = _scope()
    if scope is not None and _state.scope is scope and _state.version is not None:
        return _snapshot_for(_state.version), False
    snap = _snapshot
    if snap is None:
        return snapshot_current(), False
    return snap, True


def snapshot_confirmed(version: int) -> Snapshot:
    """The snapshot for `version`, read by the caller's own statement after `snapshot_unconfirmed`: the
    same object when it had it right, else reloaded. A request keeps that version for its other uses."""
    settings_version_note(version)
    return _snapshot_for(version)


def _snapshot_for(version: int) -> Snapshot:
    global _snapshot
    snap = _snapshot
    if snap is not None and snap.version == version:
        return snap
    # The version was read before the rows: an edit committed in between moves it again, and the next
    # request reloads. Never the other way round (rows older than the version they are filed under).
    snap = Snapshot(version=version, parts=MappingProxyType({n: load() for n, load in _loaders.items()}))
    with _lock:
        _snapshot = snap
    return snap


_REQUEST = object()


def _scope() -> object:
    """How long a version read holds: the request. Outside one (tasks, commands, the shell) every use
    reads it, so an edit made earlier in the same transaction, by any means, is seen."""
    return _REQUEST if _state.in_request else None


def snapshot_clear(**_kwargs) -> None:
    """Forget the snapshot in this process (tests; the next use reloads)."""
    global _snapshot
    with _lock:
        _snapshot = None
    _state.scope, _state.version = None, None


def _request_started(**_kwargs) -> None:
    _state.in_request, _state.scope, _state.version = True, None, None


def _request_finished(**_kwargs) -> None:
    _state.in_request, _state.scope, _state.version = False, None, None


request_started.connect(_request_started, dispatch_uid="snapshot-request-started")
request_finished.connect(_request_finished, dispatch_uid="snapshot-request-finished")
