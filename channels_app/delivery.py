"""Delivery (the Channels issue fills this in)."""


def message_deliver_enqueue(*, message_id: int) -> None:
    """Hand an accepted message to the delivery transport (called on commit)."""
