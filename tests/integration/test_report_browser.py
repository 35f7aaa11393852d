"""The measurement report in a real browser: open it, change the date range, read the charts, download
a CSV."""

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from journeys.models import EnrollmentStatus, StepRunStatus
from tests.browser import admin_login, browser_page, screenshot  # noqa: F401
from tests.journeys.factories import (
    ConversionDefinitionFactory,
    EnrollmentFactory,
    StepRunFactory,
    active_journey,
    touch,
)
from tests.orchestrator.factories import EventFactory, RecipientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def team(django_user_model):
    return django_user_model.objects.create_superuser("team", "team@example.com", "team-pass-123")


@pytest.fixture
def history():
    """Two purchases: one 3 days ago (inside the default 30 days), one 40 days ago (outside)."""
    now = timezone.now()
    ConversionDefinitionFactory(name="Purchase")
    journey = active_journey(holdout={"share": 0.1})
    for n, days in enumerate((3, 40)):
        at = now - timedelta(days=days)
        r = RecipientFactory(external_id=f"buyer-{n}", created_at=at - timedelta(days=5))
        e = EnrollmentFactory(
            journey=journey,
            version=journey.live_version,
            recipient=r,
            entered_at=at - timedelta(days=1),
            status=EnrollmentStatus.CONVERTED,
            converted_at=at,
            ended_at=at,
        )
        push = touch(r, "push", at - timedelta(hours=20), source="journey")
        StepRunFactory(enrollment=e, seq=0, step_id="nudge", status=StepRunStatus.SENT, message=push)
        touch(r, "email", at - timedelta(hours=2))
        EventFactory(recipient=r, name="purchase", occurred_at=at, properties={"amount": 30 + n})
    return journey


def test_open_the_report_change_the_date_range_and_download_a_csv(browser_page, live_server, team, history):  # noqa: F811
    page = browser_page
    admin_login(page, live_server, "team", "team-pass-123")
    page.click("text=Reports")
    page.wait_for_selector("#rep-credit")
    assert page.locator("#stat-conversions").inner_text() == "1"
    page.wait_for_selector("body[data-charts=drawn]")
    assert page.evaluate("Chart.getChart(document.getElementById('chart-credit')).data.datasets.length") == 5

    start = (timezone.now() - timedelta(days=60)).date().isoformat()
    page.fill("#rep-from", start)
    with page.expect_navigation():
        page.click("#rep-apply")
    assert f"from={start}" in page.url
    assert page.locator("#stat-conversions").inner_text() == "2"
    assert page.locator("#rep-range-from").inner_text() == start
    credit = page.locator("#table-channels").inner_text()
    assert "email" in credit and "push" in credit
    screenshot(page, "report-overall")

    with page.expect_download() as download:
        page.click("#csv-channels")
    content = Path(download.value.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(content)))
    assert rows[0][:3] == ["Channel", "Touches", "First touch (conversions)"]
    assert {row[0]: row[2] for row in rows[1:]} == {"email": "0.0", "push": "2.0"}
    assert download.value.suggested_filename.startswith("report-all-channels-")

    page.select_option("#rep-journey", history.slug)
    with page.expect_navigation():
        page.click("#rep-apply")
    page.wait_for_selector("#rep-funnel")
    page.wait_for_selector("body[data-charts=drawn]")
    assert page.locator("#stat-entrants").inner_text() == "2"
    assert "nudge" in page.locator("#table-funnel").inner_text()
    screenshot(page, "report-journey")
