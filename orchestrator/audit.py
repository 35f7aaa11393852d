"""Audit: who changed what, when, and from where (admin, API, command), on every governed object.

django-simple-history keeps one historical row per save (the full object, its user and time); this module
adds where the change came from. A request sets it from its path; a management command from its name
(`audit_source_set` wraps BaseCommand.execute in the app's ready()); anything else (a task, a test calling
a service) is "system".
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager

from django.db import models
from simple_history.models import HistoricalRecords

_source: contextvars.ContextVar[str | None] = contextvars.ContextVar("audit_source", default=None)


class AuditSource(models.TextChoices):
    ADMIN = "admin", "Admin"
    API = "api", "API"
    COMMAND = "command", "Command"
    SYSTEM = "system", "System"


class AuditedHistory(models.Model):
    """The base of every historical model: where the change came from."""

    history_source = models.CharField(max_length=120, blank=True, default="", db_index=True)

    class Meta:
        abstract = True


def audited(**kwargs) -> HistoricalRecords:
    """HistoricalRecords with the source column (the one way this project declares history)."""
    return HistoricalRecords(bases=[AuditedHistory], **kwargs)


@contextmanager
def audit_source_set(source: str):
    token = _source.set(source)
    try:
        yield
    finally:
        _source.reset(token)


def audit_source() -> str:
    """'admin', 'api', 'command: <name>' or 'system' for the change being recorded now."""
    explicit = _source.get()
    if explicit:
        return explicit
    request = getattr(HistoricalRecords.context, "request", None)
    if request is not None:
        path = getattr(request, "path", "") or ""
        if path.startswith("/api/"):
            return AuditSource.API
        if path.startswith("/admin/"):
            return AuditSource.ADMIN
        return "web"
    return AuditSource.SYSTEM


def history_source_fill(sender, history_instance, **kwargs) -> None:
    """pre_create_historical_record receiver."""
    if hasattr(history_instance, "history_source"):
        history_instance.history_source = audit_source()[:120]


def commands_audited() -> None:
    """Every management command records its changes as 'command: <name>' (installed once in ready())."""
    from django.core.management.base import BaseCommand

    if getattr(BaseCommand.execute, "_audited", False):
        return
    original = BaseCommand.execute

    def execute(self, *args, **options):
        name = type(self).__module__.rsplit(".", 1)[-1]
        with audit_source_set(f"{AuditSource.COMMAND}: {name}"):
            return original(self, *args, **options)

    execute._audited = True
    BaseCommand.execute = execute


HISTORY_TYPES = {"+": "created", "~": "changed", "-": "deleted"}


def audited_models() -> list:
    """Every model with a history (simple-history's registry), by verbose name."""
    from simple_history.models import registered_models

    found = [
        m for m in registered_models.values() if getattr(m._meta, "simple_history_manager_attribute", None)
    ]
    return sorted(set(found), key=lambda m: str(m._meta.verbose_name))


def _short(value) -> str:
    text = "—" if value in (None, "", [], {}) else str(value)
    return text if len(text) <= 120 else text[:119] + "…"


def audit_entries(*, model: str = "", user: str = "", source: str = "", limit: int = 200):
    """The latest `limit` changes across every audited model (newest first), each with who, when, from
    where, what object and which fields changed. Returns (entries, the models for the filter)."""
    from django.urls import NoReverseMatch, reverse

    models_ = audited_models()
    records = []
    for m in models_:
        label = f"{m._meta.app_label}.{m._meta.model_name}"
        if model and label != model:
            continue
        history = getattr(m, m._meta.simple_history_manager_attribute).model
        qs = history.objects.select_related("history_user").order_by("-history_date", "-history_id")
        if user:
            qs = qs.filter(history_user__username=user)
        if source:
            qs = qs.filter(history_source__startswith=source)
        records += [(m, r) for r in qs[:limit]]
    records.sort(key=lambda pair: pair[1].history_date, reverse=True)
    entries = []
    for m, record in records[:limit]:
        changes = []
        previous = record.prev_record if record.history_type == "~" else None
        if previous is not None:
            delta = record.diff_against(previous)
            changes = [(c.field, _short(c.old), _short(c.new)) for c in delta.changes]
        try:
            link = reverse(
                f"admin:{m._meta.app_label}_{m._meta.model_name}_change", args=[record.instance.pk]
            )
        except NoReverseMatch:
            link = ""
        entries.append(
            {
                "at": record.history_date,
                "user": record.history_user,
                "source": getattr(record, "history_source", "") or "system",
                "model": m._meta.verbose_name,
                "object": _short(record.instance),
                "link": link if record.history_type != "-" else "",
                "type": HISTORY_TYPES.get(record.history_type, record.history_type),
                "changes": changes,
            }
        )
    return entries, [(f"{m._meta.app_label}.{m._meta.model_name}", m._meta.verbose_name) for m in models_]
