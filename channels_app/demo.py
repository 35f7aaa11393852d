"""The demo world's channels: the four policies, a few dead letters with their attempts, an inbox."""

from __future__ import annotations

import random
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from orchestrator.models import (
    ChangeKind,
    ChangeSource,
    Channel,
    ContactPoint,
    Message,
    MessageStatus,
    PreferenceChange,
    Purpose,
    Recipient,
    Source,
)

from .defaults import DEFAULT_POLICIES
from .models import (
    AttemptOutcome,
    ChannelPolicy,
    CircuitState,
    DeadLetter,
    DeliveryAttempt,
    MessageTemplate,
    ProviderCircuit,
)

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
    consent_seed(stdout=stdout)
    created = 0
    for channel, fields in DEFAULT_POLICIES.items():
        created += ChannelPolicy.objects.get_or_create(channel=channel, defaults=fields)[1]
    stdout.write(f"Channel policies: {created} new ({ChannelPolicy.objects.count()} in all).")
    stdout.write(f"Demo template: {demo_template_seed().key} (en, pt-BR).")
    if Message.objects.filter(source_ref=DEMO_REF).exists():
        stdout.write("Channel demo deliveries: already there.")
        dead_letter_attempts_seed(stdout=stdout)
        return
    recipients = list(Recipient.objects.filter(external_id__startswith="demo-").order_by("external_id")[:6])
    if not recipients:
        return
    _deliveries_seed(recipients=recipients, stdout=stdout)
    dead_letter_attempts_seed(stdout=stdout)


def _deliveries_seed(*, recipients, stdout) -> None:
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
    stdout.write(
        "Channel demo deliveries: 3 receipts the mail server kept refusing, 3 in-app messages waiting."
    )


def dead_letter_attempts_seed(*, stdout) -> None:
    """Give every demo dead letter the delivery attempts its count says were made (the history seed has no
    attempt rows)."""
    missing = list(
        DeadLetter.objects.filter(attempts__gt=0, recipient__external_id__startswith="demo-")
        .exclude(delivery_attempts__isnull=False)
        .order_by("pk")
    )
    attempts = []
    for message in missing:
        started = message.sent_at or message.accepted_at or message.created_at
        permanent = "permanent" in message.last_error
        error = message.last_error.split("last error: ", 1)[-1]
        for n in range(1, message.attempts + 1):
            last = n == message.attempts
            attempts.append(
                DeliveryAttempt(
                    message=message,
                    number=n,
                    provider=message.provider,
                    started_at=started,
                    finished_at=started + timedelta(milliseconds=180),
                    outcome=AttemptOutcome.PERMANENT if permanent and last else AttemptOutcome.TRANSIENT,
                    response=error,
                    retry_at=None if last else started + timedelta(minutes=2**n),
                )
            )
            started += timedelta(minutes=2**n)
    DeliveryAttempt.objects.bulk_create(attempts)


CONSENT_DEMO = "demo:consent"


def consent_seed(*, stdout, weeks: int = 6, seed: int = 13) -> None:
    """Six weeks of sends and the permission they cost (unsubscribes by link, API and admin, STOPs,
    complaints, lost push tokens), a "spring-sale" campaign whose audience opts out far more than usual,
    a suppressed address with its reason, soft bounces pending, and an open provider circuit. Once."""
    if PreferenceChange.objects.filter(detail__startswith=CONSENT_DEMO).exists():
        stdout.write("Consent demo: already there.")
        return
    recipients = list(Recipient.objects.filter(external_id__startswith="demo-").order_by("external_id"))
    if len(recipients) < 8:
        return
    rng = random.Random(seed)
    now = timezone.now()
    with transaction.atomic():
        history = []
        for week in range(1, weeks + 1):
            for i, recipient in enumerate(recipients):
                at = now - timedelta(days=7 * week - rng.randint(0, 6), hours=rng.randint(0, 20))
                campaign = week in (2, 3) and i % 3 == 0
                channel = Channel.PUSH if i % 4 == 1 else Channel.EMAIL
                content = (
                    {"title": "New arrivals", "body": "Fresh picks for you.", "action_url": "app://new"}
                    if channel == Channel.PUSH
                    else {"subject": "Spring sale: 30% off", "body": "This week only."}
                    if campaign
                    else {"subject": "New this week", "body": "A few things we think you will like."}
                )
                history.append(
                    Message(
                        recipient=recipient,
                        channel=channel,
                        requested_channel=channel,
                        purpose=Purpose.PROMOTIONAL if campaign or i % 2 else Purpose.ENGAGEMENT,
                        content=content,
                        status=MessageStatus.DELIVERED,
                        source=Source.CAMPAIGN if campaign else Source.API,
                        source_ref="spring-sale" if campaign else CONSENT_DEMO,
                        warnings=[{"code": "marketing_terms", "detail": "Looks like marketing."}]
                        if campaign
                        else [],
                        provider="demo",
                        created_at=at,
                        decided_at=at,
                        accepted_at=at,
                        sent_at=at,
                        delivered_at=at,
                        reason="Within every cap.",
                    )
                )
        Message.objects.bulk_create(history)
        changes = []
        for m in history:
            roll = rng.random()
            spring = m.source_ref == "spring-sale"
            if spring and roll < 0.3 or not spring and roll < 0.03:
                kind, source, purpose = (
                    ChangeKind.UNSUBSCRIBE,
                    rng.choice([ChangeSource.LINK, ChangeSource.LINK, ChangeSource.API]),
                    m.purpose,
                )
                if m.channel == Channel.PUSH:
                    kind, source, purpose = ChangeKind.TOKEN_LOST, ChangeSource.PROVIDER, ""
                elif spring and roll < 0.05:
                    kind, source, purpose = ChangeKind.COMPLAINT, ChangeSource.PROVIDER, ""
                changes.append(
                    PreferenceChange(
                        recipient_id=m.recipient_id,
                        channel=m.channel,
                        purpose=purpose,
                        kind=kind,
                        opted_in=False,
                        source=source,
                        message=m,
                        detail=f"{CONSENT_DEMO}: {kind}",
                        created_at=m.sent_at + timedelta(hours=rng.randint(1, 30)),
                    )
                )
        sms_holders = [r for r in recipients if r.contact_points.filter(channel=Channel.SMS).exists()]
        for week, recipient in enumerate(sms_holders[:3], start=1):
            changes.append(
                PreferenceChange(
                    recipient=recipient,
                    channel=Channel.SMS,
                    kind=ChangeKind.STOP,
                    opted_in=False,
                    source=ChangeSource.PROVIDER,
                    detail=f"{CONSENT_DEMO}: twilio inbound STOP",
                    created_at=now - timedelta(days=7 * week - 2),
                )
            )
        admin_one = recipients[5]
        changes.append(
            PreferenceChange(
                recipient=admin_one,
                channel=Channel.PUSH,
                purpose=Purpose.ENGAGEMENT,
                kind=ChangeKind.UNSUBSCRIBE,
                opted_in=False,
                source=ChangeSource.ADMIN,
                detail=f"{CONSENT_DEMO}: asked support to stop reminders",
                created_at=now - timedelta(days=3),
            )
        )
        PreferenceChange.objects.bulk_create(changes)

        bounced = ContactPoint.objects.filter(recipient=recipients[1], channel=Channel.EMAIL).first()
        if bounced is not None:
            bounced.undeliverable_at = now - timedelta(days=2)
            bounced.undeliverable_reason = (
                "hard bounce (Postmark bounced: smtp;550 5.1.1 The email account that you tried to "
                "reach does not exist)"
            )
            bounced.save(update_fields=["undeliverable_at", "undeliverable_reason", "updated_at"])
            PreferenceChange.objects.create(
                recipient=recipients[1],
                channel=Channel.EMAIL,
                address=bounced.address,
                kind=ChangeKind.HARD_BOUNCE,
                opted_in=False,
                source=ChangeSource.PROVIDER,
                detail=f"{CONSENT_DEMO}: {bounced.undeliverable_reason}",
                created_at=bounced.undeliverable_at,
            )
        ContactPoint.objects.filter(recipient=recipients[2], channel=Channel.EMAIL).update(soft_bounces=2)
        ProviderCircuit.objects.update_or_create(
            provider="sms:twilio-backup",
            defaults={
                "state": CircuitState.OPEN,
                "failures": 5,
                "opened_at": now - timedelta(seconds=20),
                "retry_at": now + timedelta(seconds=40),
                "last_error": "HTTP 503: Service Unavailable (simulated in the demo)",
                "updated_at": now,
            },
        )
    stdout.write(
        f"Consent demo: {len(history)} past sends, {len(changes) + 1} preference changes, "
        f"1 suppressed address ({recipients[1].external_id}), 1 open provider circuit."
    )
