"""The admin as the messaging team uses it, in a real browser."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.browser import admin_login, browser_page, screenshot  # noqa: F401

from .factories import ContactPointFactory, EventFactory, MessageFactory, RecipientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def team_member(django_user_model):
    return django_user_model.objects.create_superuser("team", "team@example.com", "team-pass-123")


def test_team_finds_a_recipient_by_email_and_reads_the_timeline(browser_page, live_server, team_member):  # noqa: F811
    page = browser_page
    recipient = RecipientFactory(external_id="browser-ada", timezone="Asia/Tokyo")
    ContactPointFactory(recipient=recipient, address="ada@lovelace.example")
    now = timezone.now()
    MessageFactory(
        recipient=recipient,
        channel="push",
        content={"title": "Cart saved", "body": "Come back"},
        created_at=now - timedelta(hours=3),
    )
    MessageFactory(
        recipient=recipient,
        status="deferred",
        accepted_at=None,
        rule="Quiet hours",
        reason="Quiet hours 21:00–08:00 Asia/Tokyo; deferred to 08:00 local",
        deliver_after=now + timedelta(hours=5),
        created_at=now - timedelta(hours=1),
    )
    EventFactory(recipient=recipient, name="purchase", occurred_at=now - timedelta(hours=2))

    admin_login(page, live_server, "team", "team-pass-123")
    page.goto(f"{live_server.url}/admin/orchestrator/recipient/")
    page.fill("#searchbar", "ada@lovelace")
    page.press("#searchbar", "Enter")
    page.click("text=browser-ada")
    page.wait_for_selector("#timeline")

    rows = page.locator("#timeline tbody tr")
    assert rows.count() == 3
    kinds = [rows.nth(i).get_attribute("data-kind") for i in range(3)]
    assert kinds == ["message", "event", "message"]
    assert "Quiet hours" in rows.nth(0).inner_text()
    assert "deferred" in rows.nth(0).inner_text()
    assert "purchase" in rows.nth(1).inner_text()
    assert "Cart saved" in rows.nth(2).inner_text()
    today = page.locator(".orch-today").inner_text()
    assert "Last 24 h: 1 message cleared" in today and "1 held" in today  # the deferred one, apart
    screenshot(page, "recipient-timeline")

    # From the timeline to the read-only message, and back to the filtered message list.
    rows.nth(2).locator("a").click()
    page.wait_for_selector("#content")
    assert page.locator("input[name=_save]").count() == 0
    page.goto(f"{live_server.url}/admin/orchestrator/message/?channel__exact=push")
    assert "Cart saved" in page.locator("#result_list").inner_text()
    assert "Quiet hours" not in page.locator("#result_list").inner_text()


def test_api_docs_render_from_vendored_assets(browser_page, live_server):  # noqa: F811
    page = browser_page
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Orchestrator API" in page.locator(".swagger-ui .info .title").inner_text()
    page.wait_for_selector("text=/api/v1/recipients/")
