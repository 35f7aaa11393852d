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
from django.utils import timezone
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


def due_work_run(*, now: datetime | None = None, limit: int = 1000) -> dict[str, int]:
    """Run one pass of every registered due-work function; returns items handled per function."""
    now = now or timezone.now()
    handled: dict[str, int] = {}
    for path in settings.ORCHESTRATOR["DUE_WORK"]:
        handled[path] = import_string(path)(now=now, limit=limit)
    return handled


def due_work_task() -> dict[str, int]:
    """The django-q2 scheduled task (thin: one call)."""
    return due_work_run()
