"""GET /healthz (the process answers) and GET /readyz (it can serve: database, migrations, broker), for
load balancers and orchestrators: no login, no session, a tiny JSON body, never cached."""

from __future__ import annotations

from datetime import timedelta

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

DUE_WORK_TASK = "orchestrator.work.due_work_task"
# The due-work schedule runs every minute: three missed passes are worth a look (reported, not fatal).
DUE_WORK_LATE = timedelta(minutes=3)
_migrated = False  # once every migration is applied it stays so for the life of the process


def _database() -> str:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _migrations() -> str:
    global _migrated
    if not _migrated:
        connection = connections[DEFAULT_DB_ALIAS]
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            return "pending"
        _migrated = True
    return "ok"


def _broker() -> str:
    from django_q.brokers import get_broker

    return "ok" if get_broker().ping() else "down"


def _due_work() -> str:
    """When the last due-work pass finished (django-q2's record): informational, not a readiness test
    (a web node is ready to serve even while the cluster is down; the admin's banner says so)."""
    from django_q.models import Task

    last = Task.objects.filter(func=DUE_WORK_TASK).order_by("-stopped").values_list("stopped", flat=True)
    stopped = last.first()
    if stopped is None:
        return "unknown"
    return "ok" if timezone.now() - stopped <= DUE_WORK_LATE else "late"


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    checks: dict[str, str] = {}
    for name, check in (("database", _database), ("migrations", _migrations), ("broker", _broker)):
        try:
            checks[name] = check()
        except Exception as exc:  # a readiness probe answers, whatever broke
            checks[name] = f"error: {type(exc).__name__}"
    if checks["database"] == "ok":
        try:
            checks["due_work"] = _due_work()
        except Exception as exc:
            checks["due_work"] = f"error: {type(exc).__name__}"
    ready = all(checks[name] == "ok" for name in ("database", "migrations", "broker"))
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
