"""The demo's journeys: the cart-recovery sequence of CONTRACT.md, active, with a few recipients in it."""

from __future__ import annotations

import copy

from django.utils import timezone

from orchestrator.models import Recipient

from .models import Campaign, Enrollment, EnrollmentTrigger, Journey, JourneyStatus
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


DEMO_CAMPAIGN = "Spring update"


def demo_campaign_seed(*, now=None) -> Campaign | None:
    """A real campaign: the demo segment, the two-locale template, approved and sent through the
    pipeline (lint, governor, delivery) like any other (once)."""
    from channels_app.demo import demo_template_seed
    from orchestrator.demo import demo_segments_seed

    from .campaigns import campaign_create, campaign_transition, campaigns_advance

    now = now or timezone.now()
    campaign = Campaign.objects.filter(name=DEMO_CAMPAIGN).first()
    if campaign is not None:
        return campaign
    campaign = campaign_create(
        data={
            "name": DEMO_CAMPAIGN,
            "segment": demo_segments_seed().pk,
            "channel": "email",
            "purpose": "promotional",
            "template": demo_template_seed().key,
            "data": {"feature": "shared inboxes"},
        },
        now=now,
    )
    for action in ("propose", "approve"):
        campaign = campaign_transition(campaign=campaign, action=action, now=now)
    campaigns_advance(now=now)
    campaign.refresh_from_db()
    return campaign


def seed(*, stdout) -> None:
    """Install cart recovery (active) and enroll a few demo recipients who have never been in it; send
    the demo campaign."""
    campaign = demo_campaign_seed()
    stdout.write(f"Campaign {campaign.name}: {campaign.status}, {campaign.audience} recipients.")
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
