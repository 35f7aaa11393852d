"""Signals the conversation layer sends so higher layers (journeys, channels) can react without the
lower layer importing them.

Both are sent inside the action's transaction: receivers may write in it and must put side effects
(enqueueing tasks) in `transaction.on_commit`.
"""

from django.dispatch import Signal

# Sent with sender=Event, event=<Event>, after a product event is recorded.
event_ingested = Signal()
# Sent with sender=Recipient, recipient=<Recipient>, created=<bool>, after an upsert or update.
recipient_changed = Signal()
# Sent with sender=Message, message=<Message>, previous=<str status>, whenever a service moves a
# message to another status (re-decided, sent, delivered, opened, failed, expired...). Sent once per
# message, 100k times by a blast: the receivers are looked up once per sender and cached (Django clears the
# cache on every connect and disconnect).
message_status_changed = Signal(use_caching=True)
# Sent with sender=Message, messages=[<Message>, ...] once per set-based insert of new messages (a campaign
# or journey batch, a blast, an import): the news message_status_changed (previous = "") gives for one new
# message, for all of them in one call (dispatching it per message cost a 100k blast ~0.5 s). Single
# inserts and every status move still send message_status_changed.
messages_created = Signal()
# Sent with sender=Recipient, recipient_id=<int> inside `recipient_erase`'s transaction BEFORE it locks the
# recipient's row: each app locks the person's rows that its batches lock before they lock a recipient (the
# governor's lock), waiting for a batch in flight to finish, so the erasure takes its locks in the order
# every batch does and never deadlocks with one.
recipient_erase_locking = Signal()
# Sent with sender=Recipient, recipient=<Recipient> (still identified), identifiers=[str], at=<datetime>,
# counts=<dict> inside `recipient_erase`'s transaction, before the conversation's own tables are scrubbed:
# each app scrubs what it holds about the person and adds the rows it touched per table to `counts`.
# A receiver may return {"keep_event_properties": {"numbers": [key, ...], "values": {key: [value, ...]}}}:
# event properties measurement reads, kept when a number (a conversion's value) or one of the values (a
# definition's filter, written by the team, so not personal).
recipient_erasing = Signal()
