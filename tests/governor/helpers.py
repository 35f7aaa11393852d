from datetime import UTC, datetime

from governor.services import message_decide
from orchestrator.models import Message
from tests.orchestrator.factories import MessageFactory

AT = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
CONTENT = {"title": "Hello", "body": "A message."}


def decide(recipient, *, at=AT, channel="email", purpose="engagement", priority=50, **kwargs) -> Message:
    params = {
        "content": CONTENT,
        "expires_at": None,
        "deliver_after": None,
        "source": "api",
        "source_ref": "",
        "requested_channel": channel,
        "channel_reason": "",
        "warnings": [],
    }
    params.update(kwargs)
    return message_decide(
        recipient=recipient, channel=channel, purpose=purpose, priority=priority, at=at, **params
    )


def sent(recipient, at, *, channel="email", purpose="engagement", **kwargs) -> Message:
    """History: a message cleared by the governor at `at`."""
    return MessageFactory(
        recipient=recipient, channel=channel, purpose=purpose, created_at=at, accepted_at=at, **kwargs
    )
