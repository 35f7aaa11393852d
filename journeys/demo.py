"""The demo's journeys: the cart-recovery sequence of CONTRACT.md, active, with a few recipients in it."""

from __future__ import annotations

import copy

from django.utils import timezone

from orchestrator.models import Recipient

from .models import Enrollment, EnrollmentTrigger, Journey, JourneyStatus
from .services import enrollments_create_bulk, journey_create, journey_transition

CART_RECOVERY = {
    "slug": "cart-recovery",
    "name": "Cart recovery",
    "owner_channel": "push",
    "trigger": {"event": "cart_abandoned"},
    "goal": {"event": "purchase", "within": "P3D"},
    "reentry": {"policy": "cooldown", "cooldown": "P1D"},
    "steps": [
        {
            "id": "nudge",
            "type": "send",
            "channel": "push",
            "purpose": "engagement",
            "content": {
                "title": "Still thinking it over?",
                "body": "Your cart is saved.",
                "action_url": "app://cart",
            },
        },
        {"id": "pause", "type": "wait", "duration": "PT2H"},
        {
            "id": "detail",
            "type": "send",
            "channel": "email",
            "purpose": "engagement",
            "content": {
                "subject": "Your cart, with details",
                "body": "The items you left behind, with sizes, reviews and delivery options.",
            },
        },
        {"id": "visit", "type": "wait_for_event", "event": "app_open", "timeout": "P7D"},
        {
            "id": "prompt",
            "type": "send",
            "channel": "in_app",
            "purpose": "engagement",
            "content": {
                "title": "Pick up where you left off",
                "body": "Your cart is waiting.",
                "action_url": "app://cart",
            },
        },
    ],
}


def cart_recovery_definition() -> dict:
    return copy.deepcopy(CART_RECOVERY)


def cart_recovery_install(*, now=None) -> Journey:
    """Create the cart-recovery journey and take it to active (once)."""
    now = now or timezone.now()
    journey = Journey.objects.filter(slug=CART_RECOVERY["slug"]).first()
    if journey is None:
        journey = journey_create(definition=cart_recovery_definition(), now=now)
    for action, before in (
        ("propose", JourneyStatus.DRAFT),
        ("approve", JourneyStatus.PROPOSED),
        ("activate", JourneyStatus.APPROVED),
    ):
        if journey.status == before:
            journey = journey_transition(journey=journey, action=action, now=now)
    return journey


BROWSE_ABANDON = {
    "slug": "browse-abandon",
    "name": "Browse abandonment",
    "owner_channel": "push",
    "trigger": {"event": "product_viewed"},
    "goal": {"event": "purchase", "within": "P2D"},
    "steps": [
        {
            "id": "reminder",
            "type": "send",
            "channel": "push",
            "purpose": "engagement",
            "content": {
                "title": "Still on your mind?",
                "body": "It is still in stock.",
                "action_url": "app://item",
            },
        },
        {"id": "pause", "type": "wait", "duration": "PT4H"},
        {
            "id": "compare",
            "type": "send",
            "channel": "email",
            "purpose": "engagement",
            "content": {"subject": "Compare before you decide", "body": "Reviews, sizes and similar items."},
        },
    ],
}


def proposal_install(*, now=None) -> Journey | None:
    """The channel owner's proposal awaiting the messaging team's review (once), if the demo owner exists."""
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.filter(username="owner").first()
    if owner is None or Journey.objects.filter(slug=BROWSE_ABANDON["slug"]).exists():
        return None
    now = now or timezone.now()
    journey = journey_create(definition=copy.deepcopy(BROWSE_ABANDON), now=now, user=owner)
    return journey_transition(journey=journey, action="propose", now=now, user=owner)


def seed(*, stdout) -> None:
    """Install cart recovery (active), enroll a few demo recipients who have never been in it, and leave
    the channel owner's browse-abandonment proposal awaiting review."""
    if proposal_install() is not None:
        stdout.write(
            f"Journey {BROWSE_ABANDON['slug']}: proposed by owner, awaiting the messaging team's review."
        )
    journey = cart_recovery_install()
    if journey.status != JourneyStatus.ACTIVE:
        stdout.write(f"Journey {journey.slug} is {journey.status}; no demo enrollments.")
        return
    already = Enrollment.objects.filter(journey=journey).values_list("recipient_id", flat=True)
    ids = list(
        Recipient.objects.filter(external_id__startswith="demo-")
        .exclude(pk__in=already)
        .order_by("external_id")
        .values_list("pk", flat=True)[:5]
    )
    if Enrollment.objects.filter(journey=journey).exists():
        ids = []
    result = enrollments_create_bulk(
        journey=journey, recipient_ids=ids, now=timezone.now(), trigger=EnrollmentTrigger.ADMIN
    )
    stdout.write(f"Journey {journey.slug}: active, {result.enrolled} demo recipients enrolled.")
