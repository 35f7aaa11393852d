"""The set-based decision agrees with message_decide on the same inputs."""

import random
from datetime import timedelta

import pytest

from governor.models import PauseMode
from governor.services import MessageDraft, channel_pause, messages_decide_bulk
from orchestrator.models import MessageStatus
from tests.orchestrator.factories import PreferenceFactory, RecipientFactory

from .factories import QuietHoursFactory
from .helpers import AT, CONTENT, decide, sent
from .test_redrive import waiting

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module", autouse=True)
def vacuum_after(django_db_blocker):
    """Rolled-back bulk inserts leave empty pages that skew later tests' query plans: vacuum them."""
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("VACUUM orchestrator_message")


H = timedelta(hours=1)
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]


def world(rng: random.Random, twins: int):
    """Two identical populations (A and B) of recipients with varied histories, zones and opt-outs."""
    pairs = []
    for i in range(twins):
        zone = ZONES[i % len(ZONES)]
        history = [
            (
                rng.choice(["email", "push", "in_app"]),
                rng.choice(["engagement", "promotional", "alert"]),
                rng.uniform(0, 30),
            )
            for _ in range(rng.randint(0, 5))
        ]
        opt_out = rng.random() < 0.3
        queue = rng.random() < 0.2
        twin = []
        for _ in range(2):
            r = RecipientFactory(timezone=zone)
            for channel, purpose, hours in history:
                sent(r, AT - timedelta(hours=hours), channel=channel, purpose=purpose)
            if opt_out:
                for channel in ("push", "in_app"):
                    PreferenceFactory(recipient=r, channel=channel, purpose="promotional", opted_in=False)
            if queue:
                waiting(r, priority=60, created_at=AT - H, deliver_after=AT)
            twin.append(r)
        pairs.append(twin)
    return pairs


def test_bulk_and_single_decisions_agree(default_governor):
    rng = random.Random(42)
    QuietHoursFactory(
        name="midday email",
        channels=["email"],
        start=AT.time(),
        end=(AT + H).time(),
        exempt_purposes=["transactional"],
    )
    channel_pause(channel="sms", mode=PauseMode.DEFER, at=AT)
    pairs = world(rng, 40)
    plan = []
    for a, b in pairs:
        for _ in range(rng.randint(1, 3)):
            plan.append(
                (
                    a,
                    b,
                    rng.choice(["email", "push", "in_app", "sms"]),
                    rng.choice(["engagement", "promotional", "transactional"]),
                    rng.choice([20, 50, 80]),
                    rng.choice([None, AT + 2 * H, AT + 30 * H]),
                )
            )
    rng.shuffle(plan)
    drafts = [
        MessageDraft(recipient_id=a.pk, channel=ch, purpose=pu, content=CONTENT, priority=pr, expires_at=ex)
        for a, _, ch, pu, pr, ex in plan
    ]
    bulk = messages_decide_bulk(drafts=drafts, at=AT)
    single = [decide(b, channel=ch, purpose=pu, priority=pr, expires_at=ex) for _, b, ch, pu, pr, ex in plan]
    assert len(bulk) == len(single) and all(m.pk for m in bulk)
    statuses = set()
    for x, y in zip(bulk, single, strict=True):
        assert (x.status, x.rule, x.reason, x.deliver_after) == (y.status, y.rule, y.reason, y.deliver_after)
        statuses.add(x.status)
    assert statuses >= {MessageStatus.ACCEPTED, MessageStatus.DEFERRED, MessageStatus.SUPPRESSED}


def test_bulk_counts_earlier_drafts_for_the_same_recipient(default_governor):
    r = RecipientFactory()
    drafts = [MessageDraft(recipient_id=r.pk, channel="email", purpose="engagement", content=CONTENT)] * 4
    out = messages_decide_bulk(drafts=drafts, at=AT)
    assert [m.status for m in out] == ["accepted"] * 3 + ["deferred"]
    assert out[3].deliver_after == AT + 24 * H
    # The returned instances are ordinary saved Messages.
    first = out[0]
    assert first.recipient == r and first.content == CONTENT and not first._state.adding
    first.reason = "edited"
    first.save(update_fields=["reason"])
    first.refresh_from_db()
    assert first.reason == "edited" and first.accepted_at == AT
