"""The demo world's conversation: recipients across time zones with a few days of history."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from .models import (
    Channel,
    ContactPoint,
    Event,
    Message,
    MessageStatus,
    Preference,
    Purpose,
    Recipient,
    Segment,
    Source,
)

DEMO_TIMEZONES = [
    "Europe/Paris",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Europe/London",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Africa/Lagos",
    "UTC",
]
FIRST_NAMES = ["ada", "grace", "alan", "linus", "margaret", "ken", "barbara", "dennis", "radia", "edsger"]
# What each channel carries in the demo, each content with the purpose it really has: a receipt is
# transactional, a cart nudge engagement, a weekly newsletter promotional (SMS: transactional only, its
# channel policy).
CONTENT = {
    Channel.PUSH: [
        (
            Purpose.TRANSACTIONAL,
            {"title": "Your order shipped", "body": "Track it in the app.", "action_url": "app://orders"},
        ),
        (
            Purpose.ENGAGEMENT,
            {"title": "Still thinking it over?", "body": "Your cart is saved.", "action_url": "app://cart"},
        ),
    ],
    Channel.EMAIL: [
        (
            Purpose.TRANSACTIONAL,
            {
                "subject": "Your receipt",
                "body": "Thanks for your purchase. Here are the details of your order.",
            },
        ),
        (
            Purpose.ENGAGEMENT,
            {
                "subject": "Your cart, with details",
                "body": "The items you left behind, with sizes and reviews.",
            },
        ),
        (Purpose.PROMOTIONAL, {"subject": "New this week", "body": "A few things we think you will like."}),
    ],
    Channel.IN_APP: [
        (
            Purpose.ENGAGEMENT,
            {
                "title": "Pick up where you left off",
                "body": "Your cart is waiting.",
                "action_url": "app://cart",
            },
        ),
    ],
    Channel.SMS: [(Purpose.TRANSACTIONAL, {"body": "Your verification code is 428193."})],
}
# How a delivery fails on each channel (the provider's words, and the attempts made before giving up).
DEMO_FAILURES = {
    Channel.EMAIL: ("email:smtp", 1, "SMTP 550 5.1.1: mailbox unavailable (permanent)"),
    Channel.PUSH: ("push:fcm", 1, "FCM UNREGISTERED: the device token is no longer valid (permanent)"),
    Channel.SMS: ("sms:twilio", 3, "Gave up after 3 attempts; last error: Twilio 30003: unreachable handset"),
    Channel.IN_APP: ("in_app:inbox", 1, "Inbox refused: the account was closed in the product (permanent)"),
}
CAPPED_PURPOSES = (Purpose.ENGAGEMENT, Purpose.PROMOTIONAL)
EVENTS = ["app_open", "product_viewed", "cart_abandoned", "purchase"]


DEMO_PEOPLE = [
    # (username, role, channels owned or None)
    ("team", "Messaging team", None),
    ("owner", "Channel owner", ["push", "email"]),
]


def demo_people_seed(*, password_for: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """A messaging-team member and a channel owner (push + email), staff with passwords (idempotent;
    `password_for(login)` gives each one's generated password). Returns (username, password, role)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from .models import ChannelOwnership

    user_model = get_user_model()
    logins = []
    for username, role, channels in DEMO_PEOPLE:
        password = password_for(username)
        user, created = user_model.objects.get_or_create(username=username, defaults={"is_staff": True})
        if created:
            user.set_password(password)
            user.save()
            user.groups.add(*Group.objects.filter(name=role))
            if channels is not None:
                ChannelOwnership.objects.update_or_create(user=user, defaults={"channels": channels})
        logins.append((username, password if created or user.check_password(password) else "(changed)", role))
    return logins


def demo_recipients_seed(*, count: int = 40, days: int = 4, seed: int = 7, progress: bool = True) -> int:
    """Create the demo recipients (once; existing ones are left as they are). Returns how many were new."""
    rng = random.Random(seed)
    now = timezone.now()
    created = 0
    for i in tqdm(range(count), desc="demo recipients", disable=not progress, unit="recipient"):
        name = FIRST_NAMES[i % len(FIRST_NAMES)]
        external_id = f"demo-{name}-{i:03d}"
        if Recipient.objects.filter(external_id=external_id).exists():
            continue
        with transaction.atomic():
            recipient = Recipient.objects.create(
                external_id=external_id,
                timezone=DEMO_TIMEZONES[i % len(DEMO_TIMEZONES)],
                locale=rng.choice(["en-US", "en-GB", "fr-FR", "ja-JP", "pt-BR"]),
                attributes={"plan": rng.choice(["free", "pro", "team"]), "name": name.title()},
                created_at=now - timedelta(days=days + 3),
                last_seen_at=now - timedelta(hours=rng.randint(1, 48)),
            )
            points = [
                ContactPoint(
                    recipient=recipient, channel=Channel.EMAIL, address=f"{external_id}@example.com"
                ),
                ContactPoint(recipient=recipient, channel=Channel.IN_APP, address=""),
            ]
            if i % 3 != 2:
                points.append(
                    ContactPoint(recipient=recipient, channel=Channel.PUSH, address=f"push-token-{i:03d}")
                )
            if i % 4 == 0:
                points.append(
                    ContactPoint(recipient=recipient, channel=Channel.SMS, address=f"+1415555{i:04d}")
                )
            ContactPoint.objects.bulk_create(points)
            if i % 5 == 0:
                Preference.objects.create(
                    recipient=recipient, channel=Channel.EMAIL, purpose=Purpose.PROMOTIONAL, opted_in=False
                )
            channels = [cp.channel for cp in points]
            messages, events = [], []
            # One message per 9-hour slot at most: the seeded history stays within the default governor
            # (3 engagement+promotional per 24 h, 1 push per 4 h), as if it had governed it.
            slots = rng.sample(range(days * 24 // 9), k=min(rng.randint(4, 12), days * 24 // 9))
            for slot in slots:
                at = now - timedelta(hours=slot * 9, minutes=rng.randint(5, 8 * 60))
                channel = rng.choice(channels)
                status = rng.choices(
                    [
                        MessageStatus.DELIVERED,
                        MessageStatus.OPENED,
                        MessageStatus.CLICKED,
                        MessageStatus.SUPPRESSED,
                        MessageStatus.FAILED,
                    ],
                    weights=[50, 25, 10, 10, 5],
                )[0]
                purpose, content = rng.choice(CONTENT[channel])
                if status == MessageStatus.SUPPRESSED and purpose not in CAPPED_PURPOSES:
                    status = MessageStatus.DELIVERED  # the daily cap never stops a receipt or a code
                fields = {
                    "recipient": recipient,
                    "channel": channel,
                    "requested_channel": channel,
                    "purpose": purpose,
                    "content": content,
                    "status": status,
                    # Campaign history comes from a real campaign (journeys.demo), through the pipeline.
                    "source": Source.API,
                    "created_at": at,
                    "decided_at": at,
                }
                if status == MessageStatus.SUPPRESSED:
                    fields.update(
                        suppressed_at=at,
                        rule="Engagement + promotional, 24 h",
                        reason="3 of 3 engagement+promotional messages in the last 24 h across all channels.",
                    )
                else:
                    fields.update(
                        accepted_at=at,
                        sent_at=at + timedelta(seconds=2),
                        provider="demo",
                        reason="Within every cap.",
                    )
                    if status == MessageStatus.FAILED:
                        provider, attempts, error = DEMO_FAILURES[channel]
                        fields.update(
                            provider=provider,
                            attempts=attempts,
                            failed_at=at + timedelta(minutes=30 if attempts > 1 else 1),
                            last_error=error,
                        )
                    else:
                        fields["delivered_at"] = at + timedelta(seconds=5)
                    if status in (MessageStatus.OPENED, MessageStatus.CLICKED):
                        fields["opened_at"] = at + timedelta(minutes=rng.randint(1, 90))
                    if status == MessageStatus.CLICKED:
                        fields["clicked_at"] = fields["opened_at"] + timedelta(seconds=30)
                messages.append(Message(**fields))
            for _ in range(rng.randint(2, 8)):
                at = now - timedelta(minutes=rng.randint(5, days * 24 * 60))
                events.append(
                    Event(
                        recipient=recipient,
                        name=rng.choice(EVENTS),
                        occurred_at=at,
                        received_at=at,
                        properties={"source": "demo"},
                    )
                )
            Message.objects.bulk_create(messages)
            Event.objects.bulk_create(events)
            created += 1
    return created


DEMO_SEGMENT = "Paying customers on email"


def demo_segments_seed() -> Segment:
    """A real segment for the demo campaign: pro and team plans, reachable by email (once)."""
    from .services import segment_create

    existing = Segment.objects.filter(name=DEMO_SEGMENT).first()
    if existing is not None:
        return existing
    return segment_create(
        name=DEMO_SEGMENT,
        description="Everyone on a paid plan we can email.",
        match="all",
        conditions=[
            {"attribute": "plan", "op": "in", "value": ["pro", "team"]},
            {"field": "reachable", "op": "eq", "value": "email"},
        ],
    )


# Sends other systems made today, recorded into the history (orchestrator.recording): an ESP's newsletter,
# a braze push, and a legacy SMS service that texts promotions (which breaks SMS's job).
DEMO_EXTERNAL = [
    (
        "mailchimp",
        Channel.EMAIL,
        Purpose.PROMOTIONAL,
        0.6,
        {"subject": "The spring newsletter", "body": "Ten things we loved this season."},
    ),
    (
        "braze",
        Channel.PUSH,
        Purpose.ENGAGEMENT,
        0.25,
        {"title": "Come back!", "body": "We miss you.", "action_url": "app://home"},
    ),
    (
        "legacy-twilio",
        Channel.SMS,
        Purpose.PROMOTIONAL,
        0.15,
        {"body": "SALE: 30% off everything this weekend, shop now!"},
    ),
]


def demo_history_record(*, now) -> int:
    """Record the demo's sends made around the orchestrator (idempotent: each has a fixed external id);
    returns how many were new."""
    from .recording import messages_record_bulk, record_request_parse

    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    earlier = min(timedelta(hours=3), (now - midnight) / 2)
    names = list(
        Recipient.objects.filter(external_id__startswith="demo-")
        .order_by("pk")
        .values_list("external_id", flat=True)
    )
    requests = []
    for k, (system, channel, purpose, share, content) in enumerate(DEMO_EXTERNAL):
        for n, name in enumerate(names[: max(1, round(len(names) * share))]):
            body = {
                "recipient": name,
                "channel": channel,
                "purpose": purpose,
                "sent_at": now - earlier * (1 - (k * 5 + n % 5) / 40),  # this morning, never ahead
                "source_system": system,
                "external_id": f"demo-{system}-{name}",
                "content": content,
            }
            requests.append(record_request_parse(body, now=now))
    outcomes = messages_record_bulk(requests=requests, at=now)
    return sum(1 for o in outcomes if o.outcome == "recorded")
