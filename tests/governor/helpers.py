from datetime import UTC, datetime

from governor.services import MessageDraft, message_decide
from orchestrator.models import Message
from tests.orchestrator.factories import MessageFactory

AT = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
CONTENT = {"title": "Hello", "body": "A message."}


def decide(recipient, *, at=AT, channel="email", purpose="engagement", priority=50, **kwargs) -> Message:
    """Decide and record one message through the governor alone (the pipeline's last step)."""
    params = {"content": CONTENT, "requested_channel": channel, **kwargs}
    draft = MessageDraft(
        recipient_id=recipient.pk, channel=channel, purpose=purpose, priority=priority, **params
    )
    return message_decide(draft=draft, at=at)


def sent(recipient, at, *, channel="email", purpose="engagement", **kwargs) -> Message:
    """History: a message cleared by the governor at `at`."""
    return MessageFactory(
        recipient=recipient, channel=channel, purpose=purpose, created_at=at, accepted_at=at, **kwargs
    )
