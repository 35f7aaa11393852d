"""The demo's journeys: the cart-recovery sequence of CONTRACT.md, active, with a few recipients in it;
and, for the reports, a purchase conversion definition and two weeks of a win-back journey's history
(with its holdout) over the demo recipients."""

from __future__ import annotations

import copy
import random
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from orchestrator.models import ContactPoint, Event, Message, MessageStatus, Purpose, Recipient, Source

from .models import (
    Campaign,
    ConversionDefinition,
    Enrollment,
    EnrollmentStatus,
    EnrollmentTrigger,
    Journey,
    JourneyStatus,
    StepRun,
    StepRunStatus,
)
from .scheduler import HELD_OUT_DETAIL
from .services import enrollment_holdout, enrollments_create_bulk, journey_create, journey_transition

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


WIN_BACK = {
    "slug": "win-back",
    "name": "Win-back",
    "owner_channel": "email",
    "goal": {"event": "purchase", "within": "P7D", "value_property": "amount"},
    "holdout": {"share": 0.2},
    "steps": [
        {
            "id": "miss-you",
            "type": "send",
            "channel": "email",
            "purpose": "promotional",
            "content": {
                "subject": "It has been a while",
                "body": "Here is what changed since your last visit, and what people like you picked.",
            },
        },
        {"id": "pause", "type": "wait", "duration": "P2D"},
        {
            "id": "nudge",
            "type": "send",
            "channel": "push",
            "purpose": "promotional",
            "content": {"title": "New picks for you", "body": "Take a look.", "action_url": "app://picks"},
        },
        {"id": "visit", "type": "wait_for_event", "event": "app_open", "timeout": "P3D"},
        {
            "id": "picks",
            "type": "send",
            "channel": "in_app",
            "purpose": "promotional",
            "content": {
                "title": "Your picks",
                "body": "Chosen from what you liked.",
                "action_url": "app://picks",
            },
        },
    ],
}
# (step id, channel, hours after entry) of the win-back sends, in order.
WIN_BACK_SENDS = [("miss-you", "email", 0), ("nudge", "push", 48), ("picks", "in_app", 60)]


def purchase_conversion_install() -> ConversionDefinition:
    definition, _ = ConversionDefinition.objects.get_or_create(
        name="Purchase",
        defaults={
            "event": "purchase",
            "lookback": timedelta(days=7),
            "value_property": "amount",
            "description": "Any purchase, credited to what reached the buyer in the week before.",
        },
    )
    return definition


def win_back_history_seed(*, seed: int = 14) -> int:
    """Install the win-back journey (once) with two weeks of history over the demo recipients: sends that
    reached them, purchases (exposed entrants buy more often than the held-out ones), its holdout. All of
    it is at least five days old, so it never weighs on today's caps. Returns the entrants created."""
    if Journey.objects.filter(slug=WIN_BACK["slug"]).exists():
        return 0
    now = timezone.now()
    start = now - timedelta(days=20)
    rng = random.Random(seed)
    recipients = list(Recipient.objects.filter(external_id__startswith="demo-").order_by("external_id"))
    reachable = set(
        ContactPoint.objects.filter(recipient__in=recipients).values_list("recipient_id", "channel")
    )
    with transaction.atomic():
        journey = journey_create(definition=copy.deepcopy(WIN_BACK), now=start)
        for action in ("propose", "approve", "activate"):
            journey = journey_transition(journey=journey, action=action, now=start)
        share = journey.live_version.definition["holdout"]["share"]
        for recipient in recipients:
            entered = now - timedelta(days=rng.randint(8, 15), hours=rng.randint(0, 23))
            held = enrollment_holdout(journey=journey, recipient_id=recipient.pk, share=share)
            converts = rng.random() < (0.2 if held else 0.45)
            converted_at = entered + timedelta(hours=rng.randint(3, 110)) if converts else None
            enrollment = Enrollment.objects.create(
                journey=journey,
                version=journey.live_version,
                recipient=recipient,
                trigger=EnrollmentTrigger.ADMIN,
                status=EnrollmentStatus.CONVERTED if converts else EnrollmentStatus.EXITED,
                entered_at=entered,
                ended_at=converted_at or entered + timedelta(days=5),
                converted_at=converted_at,
                exit_reason="converted: purchase" if converts else "completed every step",
                held_out=held,
                holdout_share=share,
                seq=len(WIN_BACK_SENDS),
            )
            for seq, (step, channel, hours) in enumerate(WIN_BACK_SENDS):
                at = entered + timedelta(hours=hours, minutes=rng.randint(0, 50))
                if converted_at is not None and at > converted_at:
                    break
                message = None
                if not held and (recipient.pk, channel) in reachable:
                    status = rng.choices(
                        [
                            MessageStatus.DELIVERED,
                            MessageStatus.OPENED,
                            MessageStatus.CLICKED,
                            MessageStatus.SENT,
                        ],
                        weights=[50, 25, 15, 10],
                    )[0]
                    message = Message.objects.create(
                        recipient=recipient,
                        channel=channel,
                        requested_channel=channel,
                        purpose=Purpose.PROMOTIONAL,
                        content=next(s["content"] for s in WIN_BACK["steps"] if s["id"] == step),
                        status=status,
                        source=Source.JOURNEY,
                        source_ref=f"{journey.slug} · {step}",
                        provider="demo",
                        reason="Within every cap.",
                        created_at=at,
                        decided_at=at,
                        accepted_at=at,
                        sent_at=at + timedelta(seconds=2),
                        delivered_at=at + timedelta(seconds=5) if status != MessageStatus.SENT else None,
                        opened_at=at + timedelta(minutes=30)
                        if status in (MessageStatus.OPENED, MessageStatus.CLICKED)
                        else None,
                        clicked_at=at + timedelta(minutes=31) if status == MessageStatus.CLICKED else None,
                    )
                StepRun.objects.create(
                    enrollment=enrollment,
                    seq=seq,
                    step_id=step,
                    step_type="send",
                    status=StepRunStatus.SENT if message else StepRunStatus.SKIPPED,
                    detail=HELD_OUT_DETAIL
                    if held
                    else ("" if message else f"Not sent: no {channel} contact point."),
                    message=message,
                    started_at=at,
                    finished_at=at,
                )
            if converted_at is not None:
                Event.objects.create(
                    recipient=recipient,
                    name="purchase",
                    occurred_at=converted_at,
                    received_at=converted_at,
                    properties={"amount": rng.choice([19, 29, 45, 60, 89, 120]), "source": "demo"},
                )
    return len(recipients)


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
    """Install cart recovery (active) and enroll a few demo recipients who have never been in it; the
    purchase conversion and the win-back history for the reports; the channel owner's browse-abandonment
    proposal awaiting review; send the demo campaign."""
    if proposal_install() is not None:
        stdout.write(
            f"Journey {BROWSE_ABANDON['slug']}: proposed by owner, awaiting the messaging team's review."
        )
    campaign = demo_campaign_seed()
    stdout.write(f"Campaign {campaign.name}: {campaign.status}, {campaign.audience} recipients.")
    purchase_conversion_install()
    entrants = win_back_history_seed()
    if entrants:
        stdout.write(f"Journey win-back: {entrants} demo entrants of the last two weeks (reports).")
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
