"""The whole authority flow in a real browser: a channel owner builds push → wait 2 h → email in the step
builder, sees the lint refuse a 200-word push beside the step, fixes it and proposes; a messaging-team
member opens the review (diff, forecast), approves and activates; the owner sees the approval."""

from datetime import timedelta

import pytest
from django.utils import timezone

from journeys.models import Journey, JourneyStatus
from orchestrator.authority import CHANNEL_OWNER, MESSAGING_TEAM
from orchestrator.models import Event
from tests.browser import admin_login, browser_page, screenshot  # noqa: F401
from tests.conftest import user_with_roles
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def staff(user, password):
    user.is_staff = True
    user.set_password(password)
    user.save()
    return user


def set_step(card, **values):
    for name, value in values.items():
        field = card.locator(f"[name$='-{name}']")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def add_step(page, kind):
    n = page.locator(".step-card").count()
    page.select_option("#new-step-type", kind)
    page.click("#add-step")
    return page.locator(f".step-card[data-prefix='steps-{n}']")


def test_owner_builds_and_proposes_team_reviews_approves_activates(
    browser_page,  # noqa: F811
    live_server,
    django_user_model,
):
    page = browser_page
    staff(
        user_with_roles(django_user_model, "pia", CHANNEL_OWNER, channels=["push", "email"]), "pia-pass-123"
    )
    staff(user_with_roles(django_user_model, "tess", MESSAGING_TEAM), "tess-pass-123")
    now = timezone.now()
    for n in range(6):  # real history for the forecast: six carts abandoned in the last days
        r = ReachableRecipientFactory(external_id=f"shopper-{n}", timezone="UTC")
        Event.objects.create(recipient=r, name="cart_abandoned", occurred_at=now - timedelta(days=n + 1))

    # The channel owner builds the journey.
    admin_login(page, live_server, "pia", "pia-pass-123")
    page.wait_for_selector("#control-room")
    page.click("text=New journey")
    page.fill("#id_slug", "push-then-email")
    page.fill("#id_name", "Push, then email")
    page.fill("#id_trigger_event", "cart_abandoned")
    push = add_step(page, "send")
    set_step(
        push,
        id="nudge",
        channel="push",
        title="Still thinking it over?",
        body=" ".join(["word"] * 200),
        action_url="app://cart",
    )
    wait = add_step(page, "wait")
    set_step(wait, id="pause", wait_amount="2", wait_unit="hours")
    email = add_step(page, "send")
    set_step(
        email,
        id="detail",
        channel="email",
        subject="Your cart, with details",
        body="The items you left behind, with sizes and reviews.",
    )
    check = push.locator(".step-check")
    check.locator("[data-code=push_too_long]").wait_for()
    assert "200 words" in check.inner_text()
    screenshot(page, "authority-1-builder-lint-refuses-long-push")

    set_step(push, body="Your cart is saved.")
    push.locator(".chk-ok").wait_for()
    email.locator(".chk-ok").wait_for()
    assert "push_too_long" not in check.inner_text()
    screenshot(page, "authority-2-builder-fixed")
    with page.expect_navigation():
        page.click("input[name=_propose]")
    journey = Journey.objects.get(slug="push-then-email")
    assert journey.status == JourneyStatus.PROPOSED
    assert [s["type"] for s in journey.versions.get().definition["steps"]] == ["send", "wait", "send"]
    assert "Review the proposal" not in page.content(), "no approve path for the owner"

    # The messaging team reviews, approves and activates.
    team = page.context.browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    admin_login(team, live_server, "tess", "tess-pass-123")
    team.locator("#cr-review").get_by_text("Push, then email").click()
    team.wait_for_selector("#review-forecast")
    assert "no live version yet" in team.locator("#review-diff").inner_text()
    assert "nudge" in team.locator("#review-diff").inner_text()
    forecast = team.locator("#review-forecast").inner_text()
    assert "6\nrecipients would have entered" in forecast
    screenshot(team, "authority-3-review-diff-and-forecast")
    team.fill("#id_comment", "Short and to the point: approved.")
    with team.expect_navigation():
        team.click("button[value=approve]")
    with team.expect_navigation():
        team.locator("#lifecycle input[value=Activate]").click()
    journey.refresh_from_db()
    assert journey.status == JourneyStatus.ACTIVE and journey.reviewed_by.username == "tess"
    screenshot(team, "authority-4-activated")

    # The owner sees the outcome and the comment.
    page.goto(f"{live_server.url}/admin/")
    drafts = page.locator("#cr-drafts").inner_text()
    assert "Approved" in drafts and "Short and to the point" in drafts
    screenshot(page, "authority-5-owner-sees-approval")
