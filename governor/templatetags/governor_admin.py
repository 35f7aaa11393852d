"""`{% channel_pause_toggle channel %}`: a channel's pause as a toggle (the policy page, the governor
overview); it posts to the governor's pause view, which checks the permission again."""

from __future__ import annotations

from django import template

from orchestrator.authority import allowed

from ..models import ChannelPause, PauseMode
from ..pauses import PAUSE_PERM

register = template.Library()


@register.inclusion_tag("admin/governor/_pause_toggle.html", takes_context=True)
def channel_pause_toggle(context, channel: str, pauses=None) -> dict:
    """`pauses`: the active pauses already loaded by the page (else one query)."""
    request = context.get("request")
    if pauses is None:
        pause = ChannelPause.objects.filter(channel=channel, resumed_at__isnull=True).first()
    else:
        pause = next((p for p in pauses if p.channel == channel), None)
    return {
        "channel": channel,
        "pause": pause,
        "modes": PauseMode.choices,
        "can_pause": request is not None and allowed(request.user, PAUSE_PERM),
        "next": request.get_full_path() if request is not None else "",
        "csrf_token": context.get("csrf_token"),
    }
