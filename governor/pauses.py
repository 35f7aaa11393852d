"""Channel pauses: the messaging team's stop button on one channel (defer holds, suppress drops)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from orchestrator.models import Channel, Message, MessageStatus

from .models import ChannelPause, PauseMode

CHANNELS_TEXT = ", ".join(Channel.values)


class PauseError(ValueError):
    """Bad pause input: `field` and a plain reason."""

    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field, self.detail = field, detail


def channel_pause(
    *, channel: str, mode: str = PauseMode.DEFER, note: str = "", by: str = "", at: datetime | None = None
) -> ChannelPause:
    """Pause a channel (defer: held until resumed; suppress: never sent), or change an active pause."""
    if channel not in Channel.values:
        raise PauseError("channel", f"Unknown channel {channel!r}; expected one of {CHANNELS_TEXT}.")
    if mode not in PauseMode.values:
        raise PauseError("mode", f"Unknown mode {mode!r}; expected defer or suppress.")
    at = at or timezone.now()
    with transaction.atomic():
        pause = ChannelPause.objects.select_for_update().filter(channel=channel, resumed_at=None).first()
        if pause is None:
            pause = ChannelPause.objects.create(
                channel=channel, mode=mode, note=note, paused_by=by, paused_at=at
            )
        else:
            pause.mode, pause.note = mode, note or pause.note
            pause.save(update_fields=["mode", "note"])
    return pause  # the save bumped the settings version: every process sees the pause at once


def channel_resume(*, channel: str, by: str = "", at: datetime | None = None) -> int:
    """Resume a paused channel; the messages it held become due now. Returns how many were held."""
    if channel not in Channel.values:
        raise PauseError("channel", f"Unknown channel {channel!r}; expected one of {CHANNELS_TEXT}.")
    at = at or timezone.now()
    with transaction.atomic():
        pauses = list(ChannelPause.objects.select_for_update().filter(channel=channel, resumed_at=None))
        for pause in pauses:
            pause.resumed_at, pause.resumed_by = at, by
            pause.save(update_fields=["resumed_at", "resumed_by"])
        held = Message.objects.filter(
            status=MessageStatus.DEFERRED, channel=channel, deliver_after__isnull=True
        ).update(deliver_after=at, updated_at=at)
    return held


# Pausing and resuming a channel (the admin's toggle): the messaging team's call.
PAUSE_PERM = "governor.add_channelpause"
