"""The governor overview's "what went around us": sends recorded from other systems, per system."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from governor.selectors import around_us, governor_overview
from orchestrator.models import Message, MessageStatus
from orchestrator.pipeline import message_send
from tests.orchestrator.factories import ReachableRecipientFactory
from tests.orchestrator.factories import recorded_send as record

from .helpers import sent

DAILY = "Engagement + promotional, 24 h"
EMAIL = {"subject": "A nudge", "body": "Something new."}


def send(who, at):
    return message_send(recipient=who, channel="email", purpose="engagement", content=EMAIL, at=at)


@pytest.fixture
def world(default_governor):
    now = timezone.now()
    r1, r2, r3, r4 = (ReachableRecipientFactory() for _ in range(4))
    for n in range(3):  # r1's day is full of the ESP's newsletters before we send anything
        record(r1, "esp", n, at=now, ago=30 + n)
    assert send(r1, now).status == MessageStatus.DEFERRED  # because of them
    record(r2, "esp", 0, at=now, ago=20)
    sent(r2, now - timedelta(seconds=15))
    sent(r2, now - timedelta(seconds=14))
    assert send(r2, now).status == MessageStatus.DEFERRED  # without the ESP's send it would have gone
    for k in range(3):
        sent(r3, now - timedelta(seconds=12 - k))
    record(r3, "esp", 0, at=now, ago=5)
    assert send(r3, now).status == MessageStatus.DEFERRED  # full without it: not because of it
    # A legacy service texted a promotion: SMS carries only transactional and alert messages.
    record(r4, "legacy-sms", 0, at=now, channel="sms", purpose="promotional", content={"body": "SALE today!"})
    return now


def test_around_us_shows_volume_share_broken_jobs_and_deferrals_per_system(world):
    now = world
    overview = governor_overview(now=now)
    rows = {a.system: a for a in overview["around"]}
    assert list(rows) == ["esp", "legacy-sms"]
    esp, sms = rows["esp"], rows["legacy-sms"]
    assert esp.recorded == 5 and sms.recorded == 1
    # Today's cleared engagement+promotional sends: 3 + (1 + 2) + (3 + 1) + 1 = 11, of which 5 the ESP's.
    assert esp.share == round(100 * 5 / 11, 1) and sms.share == round(100 / 11, 1)
    assert esp.broke == 0 and sms.broke == 1 and sms.codes[0][0] == "sms_purpose"
    assert esp.deferred == 2 and sms.deferred == 0
    # Caps now: the ESP fills r1's day (3 of 3) and one slot of r2's and r3's: (3 + 1 + 1) / 9.
    (daily,) = [c for c in esp.caps if c.rule == DAILY]
    assert (daily.recipients, daily.full, daily.share) == (3, 1, round(100 * 5 / 9, 1))
    (sms_daily,) = sms.caps
    assert (sms_daily.recipients, sms_daily.full, sms_daily.share) == (1, 0, round(100 / 3, 1))


def test_a_send_recorded_after_the_decision_did_not_cause_it(default_governor):
    now = timezone.now()
    r = ReachableRecipientFactory()
    for k in range(3):
        sent(r, now - timedelta(seconds=30 - k))
    decided = send(r, now - timedelta(seconds=10))
    assert decided.status == MessageStatus.DEFERRED
    # Backfilled afterwards with a send time before the decision: it was not counted then.
    record(r, "esp", 0, at=now, ago=20)
    (esp,) = around_us(now=now, since=now - timedelta(hours=1), spent=4)
    assert esp.deferred == 0 and esp.recorded == 1


def test_nothing_recorded_says_so(admin_client, default_governor):
    page = admin_client.get(reverse("admin:governor_governoroverview_changelist")).content.decode()
    assert "What went around us" in page
    assert "Nothing recorded from other systems" in page


def test_the_governor_page_shows_what_went_around_us(admin_client, world):
    page = admin_client.get(reverse("admin:governor_governoroverview_changelist")).content.decode()
    section = page[page.index('id="around-us"') :]
    section = section[: section.index("</section>")]
    assert 'data-system="esp"' in section and 'data-system="legacy-sms"' in section
    assert "sms_purpose × 1" in section
    assert DAILY in section and "1 at the cap from it alone" in section
    # The link lists that system's messages.
    link = reverse("admin:orchestrator_message_changelist") + "?source__exact=external&amp;source_system=esp"
    assert link in section
    listing = admin_client.get(
        reverse("admin:orchestrator_message_changelist"),
        {"source__exact": "external", "source_system": "esp"},
    )
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == Message.objects.filter(source_system="esp").count() == 5
