"""Provider backends, one per channel, chosen by dotted path in settings.CHANNELS["BACKENDS"]."""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from .base import BaseBackend, Outgoing, SendResult

__all__ = ["BaseBackend", "Outgoing", "SendResult", "backend_for_channel"]


def backend_for_channel(*, channel: str) -> BaseBackend:
    """The configured backend instance for a channel (a fresh one each time: backends are cheap)."""
    return import_string(settings.CHANNELS["BACKENDS"][channel])()
