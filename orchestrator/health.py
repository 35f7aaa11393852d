"""Health: is background work failing (the banner on every admin page), and can this process serve
(`GET /healthz`, `GET /readyz` for load balancers and orchestrators: no login, no session, a tiny JSON body,
never cached).

Background work, two cheap questions, one small query each: did a django-q2 task fail lately, and has the
due-work pass run in the last few minutes (its heartbeat, written by `orchestrator.work` after every pass)?
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .models import WorkHeartbeat
from .work import DUE_WORK_PASS

# A failed task this recent shows; the due-work pass runs every minute, so 3 minutes without one is a stall.
FAILED_TASK_WINDOW = timedelta(hours=6)
DUE_WORK_STALE_AFTER = timedelta(minutes=3)


@dataclass(frozen=True)
class HealthProblem:
    code: str  # "task_failed", "due_work_failed", "due_work_stale", "due_work_never"
    text: str
    url: str


def _url(name: str, *args) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def health_problems(*, now: datetime) -> list[HealthProblem]:
    """What is wrong with the background work now, each with a link to where it shows."""
    from django_q.models import Failure

    problems = []
    failure = (
        Failure.objects.filter(stopped__gte=now - FAILED_TASK_WINDOW)
        .only("id", "name", "func", "stopped")
        .order_by("-stopped")
        .first()
    )
    if failure is not None:
        problems.append(
            HealthProblem(
                "task_failed",
                f"A background task failed at {failure.stopped:%H:%M} UTC ({failure.func}).",
                _url("admin:django_q_failure_change", failure.pk),
            )
        )
    beat = WorkHeartbeat.objects.filter(name=DUE_WORK_PASS).first()
    beat_url = _url("admin:orchestrator_workheartbeat_changelist")
    if beat is None:
        problems.append(
            HealthProblem(
                "due_work_never",
                "The due-work pass has never run: deferred messages, journey steps and retries wait "
                "(start the django-q2 cluster, or `manage.py orchestrate`).",
                beat_url,
            )
        )
    elif beat.last_run_at < now - DUE_WORK_STALE_AFTER:
        minutes = int((now - beat.last_run_at).total_seconds() // 60)
        last = f"{beat.last_run_at:%Y-%m-%d %H:%M} UTC"
        problems.append(
            HealthProblem(
                "due_work_stale",
                f"The due-work pass has not run for {minutes} minutes (last at {last}): "
                "deferred messages, journey steps and retries wait.",
                beat_url,
            )
        )
    elif beat.errors:
        problems.append(
            HealthProblem(
                "due_work_failed",
                f"The last due-work pass ({beat.last_run_at:%H:%M} UTC) failed in "
                f"{', '.join(sorted(beat.errors))}.",
                beat_url,
            )
        )
    return problems


def admin_health(request) -> dict:
    """Context processor: `orch_health` (lazy: evaluated only by a page that shows it) on admin pages for
    staff; nothing elsewhere."""
    user = getattr(request, "user", None)
    if not request.path.startswith("/admin/") or not getattr(user, "is_staff", False):
        return {}
    cached: list[list[HealthProblem]] = []

    def problems() -> list[HealthProblem]:
        if not cached:
            cached.append(health_problems(now=timezone.now()))
        return cached[0]

    return {"orch_health": problems}


# Probes for load balancers.

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
    """Whether the due-work pass ran lately (its heartbeat, as the admin's banner reads it): informational,
    not a readiness test (a web node is ready to serve even while the cluster is down; the banner says so)."""
    beat = WorkHeartbeat.objects.filter(name=DUE_WORK_PASS).first()
    if beat is None:
        return "unknown"
    return "ok" if timezone.now() - beat.last_run_at <= DUE_WORK_STALE_AFTER else "late"


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
