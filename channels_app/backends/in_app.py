"""In-app: the inbox is the database. `sent` = queued in the inbox; the next visit marks it delivered."""

from __future__ import annotations

from .base import BaseBackend, Outgoing, SendResult


class InboxBackend(BaseBackend):
    name = "in_app:inbox"

    def transmit(self, request: Outgoing, outgoing: Outgoing) -> str:
        return f"inbox-{outgoing.message_id}"

    def parse(self, response: str, outgoing: Outgoing) -> SendResult:
        return SendResult.success(response, "queued in the in-app inbox for the next visit")
