"""Inline SVG icons for the admin: they render without any font (Debian's chromium has no emoji font, so
⌛ and friends became missing-glyph boxes). Stroke icons on a 24-unit grid, coloured by `currentColor`."""

from __future__ import annotations

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

PATHS = {
    "send": '<rect x="3" y="5" width="18" height="14" rx="2"/><path d="m3 7 9 6 9-6"/>',
    "wait": '<path d="M6 3h12M6 21h12M7 3c0 5 10 6 10 9s-10 4-10 9M17 3c0 5-10 6-10 9s10 4 10 9"/>',
    "event": '<path d="M5 21V4M5 4h11l-2 4 2 4H5"/>',
    "branch": '<circle cx="6" cy="5" r="2"/><circle cx="6" cy="19" r="2"/><circle cx="18" cy="7" r="2"/>'
    '<path d="M6 7v10M18 9c0 5-12 3-12 8"/>',
    "exit": '<rect x="5" y="5" width="14" height="14" rx="1"/>',
    "warning": '<path d="M12 3 2 20h20L12 3z"/><path d="M12 10v4M12 17v.5"/>',
    "journey": '<circle cx="5" cy="12" r="2"/><circle cx="19" cy="12" r="2"/><path d="M7 12h10"/>',
    "dot": '<circle cx="12" cy="12" r="3"/>',
}
STEP_ICON_NAMES = {
    "send": "send",
    "wait": "wait",
    "wait_for_event": "event",
    "branch": "branch",
    "exit": "exit",
}


def icon(name: str, label: str = "") -> SafeString:
    """One icon as inline SVG; `label` makes it announced (else it is decorative)."""
    body = mark_safe(PATHS.get(name, PATHS["dot"]))  # noqa: S308 - constant markup above
    if label:
        return format_html(
            '<svg class="orch-icon orch-icon-{}" viewBox="0 0 24 24" role="img" aria-label="{}">{}</svg>',
            name,
            label,
            body,
        )
    return format_html(
        '<svg class="orch-icon orch-icon-{}" viewBox="0 0 24 24" aria-hidden="true">{}</svg>', name, body
    )


def step_icon(step_type: str) -> SafeString:
    return icon(STEP_ICON_NAMES.get(step_type, "dot"), step_type.replace("_", " "))
