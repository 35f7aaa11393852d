"""Plain-language formatting shared by reasons, the admin and reports."""

from __future__ import annotations

from datetime import timedelta


def duration_text(value: timedelta) -> str:
    """'24 h', '4 h', '7 d', '30 min' for reasons and lists."""
    seconds = int(value.total_seconds())
    if seconds and seconds % 86400 == 0:
        days = seconds // 86400
        return "24 h" if days == 1 else f"{days} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
