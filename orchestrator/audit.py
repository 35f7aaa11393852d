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
