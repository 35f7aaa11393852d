"""Delivery (the Channels issue fills this in)."""

from collections.abc import Iterable


def message_deliver_enqueue(*, message_id: int) -> None:
    """Hand an accepted message to the delivery transport (called on commit)."""


def messages_deliver_enqueue(*, message_ids: Iterable[int]) -> None:
    """Hand many accepted messages to the transport in batches (not one task per row)."""
