"""The messaging team's other screens in a real browser: the governor overview and a journey's step flow."""

from datetime import timedelta

import pytest
from django.utils import timezone

from journeys.models import JourneyStatus
from orchestrator.pipeline import message_send
from tests.browser import admin_login, browser_page, screenshot  # noqa: F401
from tests.journeys.factories import active_journey
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def team(django_user_model):
    return django_user_model.objects.create_superuser("team", "team@example.com", "team-pass-123")


def test_governor_overview_shows_the_deferred_queue_and_the_deciding_rule(browser_page, live_server, team):  # noqa: F811
    page = browser_page
    recipient = ReachableRecipientFactory(external_id="capped-carla", timezone="UTC")
    start = timezone.now() - timedelta(minutes=10)  # email has no quiet hours: any time of day will do
    for n in range(4):
        message_send(
            recipient=recipient,
            channel="email",
            purpose="engagement",
            content={"subject": f"Digest {n}", "body": "This week, in depth."},
            at=start + timedelta(minutes=n),
        )

    admin_login(page, live_server, "team", "team-pass-123")
    page.click("text=Governor overview")
    page.wait_for_selector("text=The deferred queue")
    queue = page.locator("section", has_text="The deferred queue")
    assert "capped-carla" in queue.inner_text()
    assert "3 of 3 engagement+promotional messages in the last 24 h" in queue.inner_text()
    assert "Engagement + promotional" in page.locator("section", has_text="Decisions by rule").inner_text()
    screenshot(page, "governor-overview")


def test_journey_page_reads_as_a_step_flow_with_lifecycle_buttons(browser_page, live_server, team):  # noqa: F811
    page = browser_page
    journey = active_journey()
    admin_login(page, live_server, "team", "team-pass-123")
    page.goto(f"{live_server.url}/admin/journeys/journey/")
    assert journey.slug in page.locator("#result_list").inner_text()
    page.goto(f"{live_server.url}/admin/journeys/journey/{journey.pk}/change/")
    page.wait_for_selector("#lifecycle")
    steps = page.locator("ol.orch-steps li")
    assert steps.count() == 5
    flow = page.locator("ol.orch-steps").inner_text()
    assert "Still thinking it over?" in flow and "app_open" in flow
    assert "{" not in flow, "the steps read as prose, not raw JSON"
    screenshot(page, "journey")

    with page.expect_navigation():
        page.locator("#lifecycle input[value=Pause]").click()
    journey.refresh_from_db()
    assert journey.status == JourneyStatus.PAUSED
