"""Due work: what the record says must happen now (deferred messages whose time came, due journey steps,
deliveries whose task was lost). `orchestrate --once` and the django-q2 schedule run the same pass.

Each app registers its due-work functions in settings.ORCHESTRATOR["DUE_WORK"] (dotted paths); each is
called as fn(now=..., limit=...) and returns how many items it handled. They claim rows with
SELECT ... FOR UPDATE SKIP LOCKED, so several passes may run at once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class DueWorkFailed(Exception):
    """Raised after a whole pass when some functions failed (so the django-q2 task shows as failed)."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{path}: {error}" for path, error in errors.items()))
        self.errors = errors


def due_work_run(
    *, now: datetime | None = None, limit: int = 1000, errors: dict[str, str] | None = None
) -> dict[str, int]:
    """Run one pass of every registered due-work function; returns items handled per function.

    A function that raises is logged (and its error put in `errors` when given) and the pass goes on:
    one broken job must not starve the ones after it (a failing scheduler once kept deliveries waiting).
    Its count is -1.
    """
    now = now or timezone.now()
    handled: dict[str, int] = {}
    failed: dict[str, str] = {}
    for path in settings.ORCHESTRATOR["DUE_WORK"]:
        try:
            handled[path] = import_string(path)(now=now, limit=limit)
        except Exception as exc:
            logger.exception("due work %s failed; the pass goes on", path)
            # A lost connection is replaced before the next job (outside a request nothing else does it).
            for conn in connections.all(initialized_only=True):
                if not conn.in_atomic_block:
                    conn.close_if_unusable_or_obsolete()
            handled[path] = -1
            failed[path] = f"{type(exc).__name__}: {exc}"
    if errors is not None:
        errors.update(failed)
    due_work_heartbeat(now=now, errors=failed)
    return handled


DUE_WORK_PASS = "due-work"


def due_work_heartbeat(*, now: datetime, errors: dict[str, str]) -> None:
    """Record that a pass ran (and what failed in it): one upsert, read by the admin's health banner."""
    from .models import WorkHeartbeat

    defaults = {"last_run_at": now, "errors": errors}
    if not errors:
        defaults["last_ok_at"] = now
    try:
        WorkHeartbeat.objects.update_or_create(name=DUE_WORK_PASS, defaults=defaults)
    except DatabaseError:
        logger.exception("could not record the due-work heartbeat")


def due_work_task() -> dict[str, int]:
    """The django-q2 scheduled task (thin: one call); fails after the whole pass if a function failed."""
    errors: dict[str, str] = {}
    handled = due_work_run(errors=errors)
    if errors:
        raise DueWorkFailed(errors)
    return handled
