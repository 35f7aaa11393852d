"""The consent screens in a real browser, on the demo world: the permission-burn chart with the flagged
campaign, a suppressed address cleared by the team, and the provider circuits."""

import io

import pytest
from django.core.management import call_command

from orchestrator.models import ContactPoint, PreferenceChange
from tests.browser import admin_login, browser_page, screenshot  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_team_reads_the_burn_monitor_and_clears_a_suppressed_address(
    browser_page,  # noqa: F811
    live_server,
    monkeypatch,
):
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "demo-pass-for-this-test")  # the demo's is generated
    call_command("seed_demo", "--recipients", "16", "--no-progress", stdout=io.StringIO())
    page = browser_page
    admin_login(page, live_server, "admin", "demo-pass-for-this-test")

    page.click("text=Permission-burn monitor")
    page.wait_for_selector("#burn-chart")
    drawn = page.evaluate("() => Chart.getChart(document.getElementById('burn-chart')).data.datasets.length")
    assert drawn == 6  # four kinds of lost permission, the volume and the lint-warned volume
    flagged = page.locator("#burn-sources tr", has_text="spring-sale")
    assert "opts out at ≥ 2× the channel" in flagged.first.inner_text()
    screenshot(page, "permission-burn-monitor")

    page.goto(f"{live_server.url}/admin/orchestrator/contactpoint/?deliverable=no")
    row = page.locator("#result_list tbody tr").first
    assert "550 5.1.1" in row.inner_text()
    screenshot(page, "suppressed-contact-points")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "clear_suppression")
    with page.expect_navigation():
        page.click("button[name=index]")
    assert "Cleared 1 contact point" in page.locator(".messagelist").inner_text()
    assert not ContactPoint.objects.filter(undeliverable_at__isnull=False).exists()
    assert PreferenceChange.objects.filter(kind="cleared", source="admin").count() == 1

    page.goto(f"{live_server.url}/admin/channels_app/providercircuit/")
    assert "sms:twilio-backup" in page.locator("#result_list").inner_text()
    screenshot(page, "provider-circuits")
