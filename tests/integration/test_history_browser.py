"""Sends made around the orchestrator, as the messaging team sees them in a real browser: the governor's
"what went around us" and the recipient's timeline."""

from __future__ import annotations

import pytest
from django.utils import timezone

from governor.defaults import defaults_install
from governor.models import CapRule, ChannelPause, QuietHours
from governor.policy import policy_cache_clear
from orchestrator.pipeline import message_send
from tests.browser import admin_login, browser_page, screenshot  # noqa: F401
from tests.orchestrator.factories import ReachableRecipientFactory
from tests.orchestrator.factories import recorded_send as record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_what_went_around_us_and_the_timeline(browser_page, live_server, django_user_model):  # noqa: F811
    CapRule.objects.all().delete()
    QuietHours.objects.all().delete()
    ChannelPause.objects.all().delete()
    defaults_install(CapRule, QuietHours)
    policy_cache_clear()
    django_user_model.objects.create_superuser("team", "team@example.com", "team-pass-123")
    now = timezone.now()
    ada = ReachableRecipientFactory(external_id="ada")
    for n in range(3):
        record(ada, "mailchimp", n, at=now, ago=90 - n)
    record(
        ada,
        "legacy-twilio",
        0,
        at=now,
        channel="sms",
        purpose="promotional",
        content={"body": "SALE: 30% off everything, shop now!"},
        ago=60,
    )
    held = message_send(
        recipient=ada,
        channel="email",
        purpose="engagement",
        content={"subject": "Your weekly picks", "body": "Three things for you."},
        at=now,
    )
    assert held.status == "deferred"

    page = browser_page
    admin_login(page, live_server, "team", "team-pass-123")
    page.goto(f"{live_server.url}/admin/governor/governoroverview/")
    card = page.locator("#around-us")
    card.wait_for()
    mailchimp = card.locator('tr[data-system="mailchimp"]')
    assert "3" in mailchimp.locator("td").nth(1).inner_text()
    assert mailchimp.locator("td").nth(4).inner_text().strip() == "1"  # our email, held by their sends
    twilio = card.locator('tr[data-system="legacy-twilio"]')
    assert "sms_purpose × 1" in twilio.inner_text()
    screenshot(page, "governor-around-us")

    # From the card to that system's messages.
    mailchimp.locator("a", has_text="messages").click()
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 3

    page.goto(f"{live_server.url}/admin/orchestrator/recipient/{ada.pk}/change/")
    page.wait_for_selector("#timeline")
    external = page.locator('#timeline tr[data-source="external"]')
    assert external.count() == 4
    text = page.locator("#timeline").inner_text()
    assert "Sent by mailchimp, outside the orchestrator" in text
    assert "sms_purpose" in text
    ours = page.locator(f'#timeline tr[data-id="{held.pk}"]')
    # Three newsletters and the promotional SMS: 4 of the 3 engagement+promotional messages of the day.
    assert "deferred" in ours.inner_text() and "4 of 3" in ours.inner_text()
    screenshot(page, "timeline-with-recorded-sends")
