import factory
from django.utils import timezone

from orchestrator.models import (
    Channel,
    ContactPoint,
    Event,
    Message,
    MessageStatus,
    Preference,
    Purpose,
    Recipient,
)


class RecipientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Recipient

    external_id = factory.Sequence(lambda n: f"user-{n:05d}")
    timezone = "UTC"
    locale = "en-US"


class ContactPointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ContactPoint

    recipient = factory.SubFactory(RecipientFactory)
    channel = Channel.EMAIL
    address = factory.LazyAttribute(lambda o: f"{o.recipient.external_id}@example.com")


class ReachableRecipientFactory(RecipientFactory):
    """A recipient reachable on every channel."""

    class Meta:
        skip_postgeneration_save = True

    email = factory.RelatedFactory(ContactPointFactory, "recipient", channel=Channel.EMAIL)
    push = factory.RelatedFactory(
        ContactPointFactory,
        "recipient",
        channel=Channel.PUSH,
        address=factory.LazyAttribute(lambda o: f"token-{o.factory_parent.external_id}"),
    )
    sms = factory.RelatedFactory(
        ContactPointFactory, "recipient", channel=Channel.SMS, address="+14155550123"
    )
    in_app = factory.RelatedFactory(ContactPointFactory, "recipient", channel=Channel.IN_APP, address="")


class PreferenceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Preference

    recipient = factory.SubFactory(RecipientFactory)
    channel = Channel.EMAIL
    purpose = Purpose.PROMOTIONAL
    opted_in = False


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    recipient = factory.SubFactory(RecipientFactory)
    name = "app_open"
    occurred_at = factory.LazyFunction(timezone.now)


class MessageFactory(factory.django.DjangoModelFactory):
    """A message already decided and accepted (history for the governor to count)."""

    class Meta:
        model = Message

    recipient = factory.SubFactory(RecipientFactory)
    channel = Channel.EMAIL
    requested_channel = factory.SelfAttribute("channel")
    purpose = Purpose.ENGAGEMENT
    content = factory.LazyFunction(lambda: {"subject": "Hello", "body": "A message."})
    status = MessageStatus.ACCEPTED
    created_at = factory.LazyFunction(timezone.now)
    decided_at = factory.SelfAttribute("created_at")
    accepted_at = factory.SelfAttribute("created_at")


def recorded_send(
    who, system: str, n: int, *, at, channel="email", purpose="engagement", content=None, ago=60
):
    """A send `system` made `ago` seconds before `at`, recorded into the history (orchestrator.recording)."""
    from datetime import timedelta

    from orchestrator.recording import message_record, record_request_parse

    body = {
        "recipient": who.external_id,
        "channel": channel,
        "purpose": purpose,
        "sent_at": at - timedelta(seconds=ago),
        "source_system": system,
        "external_id": f"{system}-{who.external_id}-{n}",
        "content": content if content is not None else {"subject": "News", "body": "This week."},
    }
    return message_record(request=record_request_parse(body, now=at), at=at)[0]
