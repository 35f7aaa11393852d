"""django-q2 tasks: thin, take ids, call one service."""

from __future__ import annotations

from .delivery import deliveries_drain, messages_deliver


def messages_deliver_task(message_ids: list[int]) -> int:
    return messages_deliver(message_ids=message_ids)


def deliveries_drain_task() -> int:
    return deliveries_drain()
