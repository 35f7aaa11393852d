import factory
from django.utils import timezone

from channels_app.models import AttemptOutcome, ChannelPolicy, DeliveryAttempt
from orchestrator.models import Channel, MessageStatus, Purpose
from tests.orchestrator.factories import MessageFactory, ReachableRecipientFactory

CONTENT = {
    Channel.EMAIL: {"subject": "Your receipt", "body": "Thanks for your order."},
    Channel.PUSH: {
        "title": "Your order shipped",
        "body": "Track it in the app.",
        "action_url": "app://orders",
    },
    Channel.SMS: {"body": "Your verification code is 428193."},
    Channel.IN_APP: {"title": "Pick up where you left off", "body": "Your cart.", "action_url": "app://cart"},
}


class ChannelPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChannelPolicy
        django_get_or_create = ["channel"]

    channel = Channel.PUSH
    job = "Push is urgent"


class AcceptedMessageFactory(MessageFactory):
    """An accepted message to a recipient reachable on every channel, waiting for delivery."""

    recipient = factory.SubFactory(ReachableRecipientFactory)
    channel = Channel.EMAIL
    purpose = Purpose.TRANSACTIONAL
    status = MessageStatus.ACCEPTED
    content = factory.LazyAttribute(lambda o: dict(CONTENT[o.channel]))


class DeliveryAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DeliveryAttempt

    message = factory.SubFactory(AcceptedMessageFactory)
    number = factory.Sequence(lambda n: n + 1)
    provider = "sms:locmem"
    started_at = factory.LazyFunction(timezone.now)
    outcome = AttemptOutcome.SUCCESS
