"""The review's forecast on a hand-built history where the right numbers are known."""

from datetime import UTC, datetime, timedelta

import pytest

from governor.models import CapRule
from governor.policy import policy_cache_clear
from journeys.forecast import journey_forecast
from orchestrator.models import Channel, ContactPoint, Event, Message, MessageStatus, Preference, Recipient
from tests.governor.conftest import no_governor  # noqa: F401

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
RULE_A = "Engagement + promotional, 3 per 24 h"
RULE_B = "Push engagement, 1 per 4 h"

DEFINITION = {
    "slug": "cart-recovery",
    "name": "Cart recovery",
    "owner_channel": "push",
    "trigger": {"event": "cart_abandoned"},
    "goal": {"event": "purchase", "within": "P3D"},
    "steps": [
        {
            "id": "nudge",
            "type": "send",
            "channel": "push",
            "purpose": "engagement",
            "expires_after": "PT3H",
            "content": {"title": "Still there?", "body": "Your cart is saved.", "action_url": "app://cart"},
        },
        {"id": "pause", "type": "wait", "duration": "PT2H"},
        {
            "id": "detail",
            "type": "send",
            "channel": "email",
            "purpose": "engagement",
            "content": {"subject": "Your cart", "body": "The details of what you left behind."},
        },
    ],
}


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def person(name: str, *, push: bool = True) -> Recipient:
    r = Recipient.objects.create(external_id=name, timezone="UTC")
    ContactPoint.objects.create(recipient=r, channel=Channel.EMAIL, address=f"{name}@example.com")
    if push:
        ContactPoint.objects.create(recipient=r, channel=Channel.PUSH, address=f"token-{name}")
    return r


def cleared(r: Recipient, channel: str, when: datetime, purpose: str = "engagement") -> None:
    Message.objects.create(
        recipient=r,
        channel=channel,
        purpose=purpose,
        content={"body": "real"},
        status=MessageStatus.DELIVERED,
        created_at=when,
        decided_at=when,
        accepted_at=when,
    )


def event(r: Recipient, name: str, when: datetime) -> None:
    Event.objects.create(recipient=r, name=name, occurred_at=when)


@pytest.fixture
def history(no_governor):  # noqa: F811
    CapRule.objects.create(
        name=RULE_A, limit=3, window=timedelta(hours=24), purposes=["engagement", "promotional"]
    )
    CapRule.objects.create(
        name=RULE_B, limit=1, window=timedelta(hours=4), channels=["push"], purposes=["engagement"]
    )
    policy_cache_clear()
    r1 = person("r1")  # plain: push at 10:00, email at 12:00
    event(r1, "cart_abandoned", at(10, 10))
    r2 = person("r2")  # a push 2 h before: the nudge waits for rule B until 12:00, the email goes at 14:00
    cleared(r2, "push", at(10, 8))
    event(r2, "cart_abandoned", at(10, 10))
    r3 = person("r3", push=False)  # no push token; three emails already that night: the email waits a day
    for hour in (0, 1, 2):
        cleared(r3, "email", at(11, hour))
    event(r3, "cart_abandoned", at(11, 9))
    r4 = person("r4")  # buys before the email: converted, no email
    event(r4, "cart_abandoned", at(12, 10))
    event(r4, "purchase", at(12, 11))
    r5 = person("r5")  # opted out of engagement email: the email is suppressed
    Preference.objects.create(recipient=r5, channel="email", purpose="engagement", opted_in=False)
    event(r5, "cart_abandoned", at(13, 10))
    r6 = person("r6")  # triggers twice within the run (entered once); its real 13:00 email makes 3 in 24 h
    event(r6, "cart_abandoned", at(5, 10))
    event(r6, "cart_abandoned", at(5, 11))
    cleared(r6, "email", at(5, 13))
    r7 = person("r7")  # triggered before the 14 days: not replayed
    event(r7, "cart_abandoned", at(1, 10) - timedelta(days=10))
    r8 = person("r8")  # an hour before now: the push goes, the email would come after the window
    event(r8, "cart_abandoned", at(15, 11))
    r9 = person("r9")  # a push at 09:30: rule B frees the slot at 13:30, after the nudge expires (13:00)
    cleared(r9, "push", at(13, 9, 30))
    event(r9, "cart_abandoned", at(13, 10))


def test_the_forecast_replays_the_proposal_with_the_known_numbers(history, django_assert_max_num_queries):
    with django_assert_max_num_queries(20):  # a fixed handful, whatever the history size
        f = journey_forecast(definition=DEFINITION, now=NOW)
    assert_known_numbers(f)


@pytest.mark.django_db(transaction=True)
def test_the_same_numbers_when_the_database_counts_caps_on_its_own_connection(history):
    """Outside a transaction, PostgreSQL counts who reached each cap on a second connection meanwhile."""
    assert_known_numbers(journey_forecast(definition=DEFINITION, now=NOW))


def assert_known_numbers(f):
    assert (f.entered, f.recipients_entered, f.converted) == (8, 8, 1)
    assert dict(f.sends) == {"push": 7, "email": 6}
    assert dict(f.cleared) == {"push": 6, "email": 5}
    assert dict(f.unreachable) == {"push": 1}
    assert dict(f.deferred) == {RULE_B: 1, RULE_A: 1}
    assert dict(f.suppressed) == {"preferences": 1}
    assert dict(f.expired) == {RULE_B: 1}
    assert f.still_deferred == 0
    assert f.recipients_total == 9
    # Before: r3 reached rule A (3 emails in 3 h); r2 and r9 had a push (rule B allows one per 4 h).
    assert (f.rule_before[RULE_A], f.rule_before[RULE_B], f.at_cap_before) == (1, 2, 3)
    # After: r2 and r6 reach 3 in 24 h too; every recipient whose nudge cleared used rule B.
    assert (f.rule_after[RULE_A], f.rule_after[RULE_B], f.at_cap_after) == (3, 7, 8)


def test_the_forecast_writes_nothing(history):
    before = (Message.objects.count(), Event.objects.count())
    journey_forecast(definition=DEFINITION, now=NOW)
    assert (Message.objects.count(), Event.objects.count()) == before


def test_a_journey_without_trigger_forecasts_no_entry(history):
    f = journey_forecast(definition={**DEFINITION, "trigger": None}, now=NOW)
    assert f.entered == 0 and f.at_cap_before == f.at_cap_after == 3
    assert "No trigger event" in f.notes[0]
