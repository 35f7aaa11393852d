"""Channel policy lint (the Channels issue fills in the rules)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    BLOCK = "block"
    WARN = "warn"


@dataclass(frozen=True)
class Violation:
    code: str
    severity: Severity
    reason: str


def message_lint(*, channel: str, purpose: str, content: Mapping[str, Any]) -> list[Violation]:
    """Return the channel-policy violations of one message (or journey send step)."""
    return []
