"""The demo world's channels: the four policies, a few dead letters with their attempts, an inbox."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from orchestrator.models import Channel, Message, MessageStatus, Purpose, Recipient, Source

from .defaults import DEFAULT_POLICIES
from .models import AttemptOutcome, ChannelPolicy, DeliveryAttempt, MessageTemplate

DEMO_REF = "demo:channels"


DEMO_TEMPLATE = {
    "key": "spring-update",
    "name": "Spring update",
    "channel": "email",
    "purpose": "promotional",
    "default_locale": "en",
    "locales": {
        "en": {
            "subject": "{{ recipient.attributes.name | default: 'Hello' }}, what's new this spring",
            "body": "Hi {{ recipient.attributes.name | default: 'there' }}, your "
            "{{ recipient.attributes.plan }} plan now includes "
            "{{ data.feature | default: 'a few new things' }}.",
        },
        "pt-BR": {
            "subject": "{{ recipient.attributes.name | default: 'Olá' }}, as novidades da primavera",
            "body": "Oi {{ recipient.attributes.name | default: 'você' }}, seu plano "
            "{{ recipient.attributes.plan }} agora inclui {{ data.feature | default: 'algumas novidades' }}.",
        },
    },
}


def demo_template_seed() -> MessageTemplate:
    """The demo's two-locale template (once)."""
    from .services import template_create

    return MessageTemplate.objects.filter(key=DEMO_TEMPLATE["key"]).first() or template_create(
        data=dict(DEMO_TEMPLATE)
    )


def seed(*, stdout) -> None:
    """Idempotent: policies are created only when missing; demo deliveries only once."""
    created = 0
    for channel, fields in DEFAULT_POLICIES.items():
        created += ChannelPolicy.objects.get_or_create(channel=channel, defaults=fields)[1]
    stdout.write(f"Channel policies: {created} new ({ChannelPolicy.objects.count()} in all).")
    stdout.write(f"Demo template: {demo_template_seed().key} (en, pt-BR).")
    if Message.objects.filter(source_ref=DEMO_REF).exists():
        stdout.write("Channel demo deliveries: already there.")
        return
    recipients = list(Recipient.objects.filter(external_id__startswith="demo-").order_by("external_id")[:6])
    if not recipients:
        return
    now = timezone.now()
    with transaction.atomic():
        for i, recipient in enumerate(recipients[:3]):
            at = now - timedelta(hours=2 + i)
            message = Message.objects.create(
                recipient=recipient,
                channel=Channel.EMAIL,
                requested_channel=Channel.EMAIL,
                purpose=Purpose.TRANSACTIONAL,
                content={"subject": "Your receipt", "body": "Thanks for your order."},
                status=MessageStatus.FAILED,
                source=Source.API,
                source_ref=DEMO_REF,
                provider="email:smtp",
                attempts=8,
                last_error="Gave up after 8 attempts; last error: SMTP 451: 'Temporary local problem'",
                created_at=at,
                decided_at=at,
                accepted_at=at,
                failed_at=at + timedelta(minutes=31),
            )
            delay = timedelta(seconds=15)
            when = at
            for n in range(1, 9):
                DeliveryAttempt.objects.create(
                    message=message,
                    number=n,
                    provider="email:smtp",
                    started_at=when,
                    finished_at=when + timedelta(milliseconds=120),
                    outcome=AttemptOutcome.TRANSIENT,
                    response="SMTP 451: 'Temporary local problem'",
                    retry_at=when + delay if n < 8 else None,
                )
                when, delay = when + delay, min(delay * 2, timedelta(minutes=15))
        for recipient in recipients[3:]:
            Message.objects.create(
                recipient=recipient,
                channel=Channel.IN_APP,
                requested_channel=Channel.IN_APP,
                purpose=Purpose.ENGAGEMENT,
                content={
                    "title": "Pick up where you left off",
                    "body": "Your cart is waiting.",
                    "action_url": "app://cart",
                },
                status=MessageStatus.SENT,
                source=Source.API,
                source_ref=DEMO_REF,
                provider="in_app:inbox",
                attempts=1,
                created_at=now - timedelta(minutes=30),
                decided_at=now - timedelta(minutes=30),
                accepted_at=now - timedelta(minutes=30),
                sent_at=now - timedelta(minutes=30),
                expires_at=now + timedelta(days=7),
            )
    stdout.write("Channel demo deliveries: 3 dead letters, 3 in-app messages waiting for a visit.")
