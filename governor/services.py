"""The governor's services, by job: one decision (`decision`), many at once (`bulk`), the re-drive of
deferred messages (`redrive`) and channel pauses (`pauses`); which messages a cap rule counts lives in
`counting`, the pure decision in `policy`. This module is the front door the rest of the project uses.

Only the send pipeline (orchestrator.pipeline) asks for a decision that records a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from orchestrator.models import Message

from .bulk import decisions_preview_bulk, messages_decide_bulk
from .decision import MessageDraft, governor_check, message_decide
from .pauses import PauseError, channel_pause, channel_resume
from .redrive import deferred_redrive

__all__ = [
    "MessageDraft",
    "PauseError",
    "channel_pause",
    "channel_resume",
    "decisions_preview_bulk",
    "deferred_redrive",
    "governor_check",
    "message_decide",
    "messages_decide",
    "messages_decide_bulk",
]


def messages_decide(*, drafts: Sequence[MessageDraft], at: datetime) -> list[Message | None]:
    """Decide and record drafts: one on the single hot path (two prepared statements and the insert),
    several set-based. Same decisions either way; returns the Messages in the order of `drafts` (None where
    the set-based path found the recipient erased under its lock)."""
    if len(drafts) == 1:
        return [message_decide(draft=drafts[0], at=at)]
    return messages_decide_bulk(drafts=drafts, at=at)
