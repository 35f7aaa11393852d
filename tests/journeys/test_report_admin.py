"""The report pages in the admin: the overall and a journey's report, filters, CSV of every table, the
conversion definitions and the holdout on the enrollment."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from journeys.models import ConversionDefinition, EnrollmentStatus, StepRunStatus
from tests.journeys.factories import (
    ConversionDefinitionFactory,
    EnrollmentFactory,
    StepRunFactory,
    active_journey,
    touch,
)
from tests.orchestrator.factories import EventFactory, RecipientFactory

pytestmark = pytest.mark.django_db

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
REPORT = "/admin/journeys/report/"


@pytest.fixture
def world():
    ConversionDefinitionFactory(name="Purchase")
    journey = active_journey(holdout={"share": 0.2})
    for n in range(3):
        r = RecipientFactory(external_id=f"buyer-{n}")
        e = EnrollmentFactory(
            journey=journey,
            version=journey.live_version,
            recipient=r,
            entered_at=T - timedelta(days=1),
            status=EnrollmentStatus.CONVERTED if n < 2 else EnrollmentStatus.EXITED,
            converted_at=T if n < 2 else None,
            ended_at=T,
            held_out=n == 1,
        )
        if n != 1:
            m = touch(r, "push", T - timedelta(hours=20), source="journey")
            StepRunFactory(enrollment=e, seq=0, step_id="nudge", status=StepRunStatus.SENT, message=m)
        touch(r, "email", T - timedelta(hours=2))
        if n < 2:
            EventFactory(recipient=r, name="purchase", occurred_at=T, properties={"amount": 25})
    return journey


def csv_rows(response):
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment; filename=")
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_the_overall_report_shows_every_model_side_by_side(admin_client, world):
    html = admin_client.get(REPORT, {"from": "2026-03-01", "to": "2026-03-31"}).content.decode()
    for text in (
        "Credit by channel, every model side by side",
        "Position-based (40/20/40)",
        "Time decay",
        "What last touch gets wrong",
        "Top touch sequences",
        "True lift against the global holdout",
        "Conversions by definition",
        "vendor/chart.umd.js",
        'id="report-data"',
    ):
        assert text in html, text
    assert 'id="stat-conversions">2<' in html
    assert "Last touch gives email 100 % of the credit; linear gives it 75 %" in html


def test_a_journey_report_has_its_funnel_holdout_and_sequences(admin_client, world):
    html = admin_client.get(REPORT, {"journey": world.slug, "from": "2026-03-01"}).content.decode()
    assert "Conversion funnel by step" in html and "True lift against the journey's holdout" in html
    assert 'id="stat-entrants">3<' in html and 'id="stat-converted">2<' in html
    assert "20 % of entrants are held out" in html
    assert "(held out)" in html and "nudge (push)" in html


def test_bad_filters_are_listed_and_the_defaults_used(admin_client, world):
    response = admin_client.get(REPORT, {"from": "2026-03-10", "to": "2026-03-01", "half_life": "0"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "The range is reversed" in html and "The half-life must be longer than zero" in html
    assert admin_client.get(REPORT, {"journey": "nope"}).status_code == 200


def test_every_table_downloads_as_csv(admin_client, world):
    params = {"journey": world.slug, "from": "2026-03-01", "to": "2026-03-31"}
    rows = csv_rows(admin_client.get(f"{REPORT}csv/channels/", params))
    assert rows[0][:4] == ["Channel", "Touches", "First touch (conversions)", "Last touch (conversions)"]
    assert rows[1][:4] == ["push", "1", "1.0", "1.0"]
    for table in ("steps", "sequences", "funnel", "trend", "holdout"):
        assert len(csv_rows(admin_client.get(f"{REPORT}csv/{table}/", params))) >= 2, table
    overall = {"from": "2026-03-01", "to": "2026-03-31"}
    for table in ("channels", "journeys", "credit_journeys", "definitions", "steps"):
        assert len(csv_rows(admin_client.get(f"{REPORT}csv/{table}/", overall))) >= 2, table
    response = admin_client.get(f"{REPORT}csv/channels/", overall)
    assert 'filename="report-all-channels-2026-03-01-2026-03-31.csv"' in response["Content-Disposition"]
    assert admin_client.get(f"{REPORT}csv/nothing/").status_code == 404


def test_only_staff_read_reports(client, django_user_model, world):
    django_user_model.objects.create_user("viewer", password="pw-12345678")
    client.login(username="viewer", password="pw-12345678")
    assert client.get(REPORT).status_code == 302  # to the admin login
    assert client.get(f"{REPORT}csv/channels/").status_code == 302


def test_the_journey_page_links_to_its_report_and_states_its_holdout(admin_client, world):
    html = admin_client.get(f"/admin/journeys/journey/{world.pk}/change/").content.decode()
    assert f'href="{REPORT}?journey={world.slug}"' in html
    assert "Holdout: 20 % of entrants get no sends" in html


def test_the_enrollment_shows_its_holdout(admin_client, world):
    listing = admin_client.get("/admin/journeys/enrollment/", {"held_out__exact": "1"}).content.decode()
    assert "held out" in listing and "buyer-1" in listing and "buyer-0" not in listing


def test_conversion_definitions_are_kept_in_the_admin(admin_client):
    response = admin_client.post(
        "/admin/journeys/conversiondefinition/add/",
        {
            "name": "Pro upgrade",
            "event": "upgrade",
            "property_filter": '{"plan": "pro"}',
            "lookback": "3 00:00:00",
            "value_property": "amount",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    d = ConversionDefinition.objects.get(name="Pro upgrade")
    assert (d.property_filter, d.lookback, d.value_property) == ({"plan": "pro"}, timedelta(days=3), "amount")
    listing = admin_client.get("/admin/journeys/conversiondefinition/").content.decode()
    assert "plan = &#x27;pro&#x27;" in listing and "3 d" in listing
    bad = admin_client.post(
        "/admin/journeys/conversiondefinition/add/",
        {
            "name": "Bad",
            "event": "x",
            "property_filter": '{"a": {"b": 1}}',
            "lookback": "0",
            "value_property": "a b",
        },
    )
    assert bad.status_code == 200
    text = bad.content.decode()
    assert "compare with a plain value" in text and "positive duration" in text and "A property name" in text


def test_the_admin_lists_reports_under_journeys(admin_client):
    html = admin_client.get("/admin/").content.decode()
    assert f'href="{REPORT}"' in html and "Conversion definitions" in html
    assert timezone.now()  # the default range ends today
    page = admin_client.get(REPORT).content.decode()
    assert (timezone.now().date()).isoformat() in page


def test_the_demo_fills_the_reports(client, django_user_model):
    from django.core.management import call_command

    call_command("seed_demo", "--recipients", "30", "--no-progress", stdout=io.StringIO())
    call_command("seed_demo", "--recipients", "30", "--no-progress", stdout=io.StringIO())  # idempotent
    assert ConversionDefinition.objects.filter(name="Purchase").count() == 1
    from journeys.models import Enrollment

    win_back = Enrollment.objects.filter(journey__slug="win-back")
    assert win_back.count() == 30 and win_back.filter(held_out=True).exists()
    assert win_back.filter(status=EnrollmentStatus.CONVERTED).exists()
    client.force_login(django_user_model.objects.get(username="admin"))  # seed_demo set its password
    html = client.get(REPORT, {"journey": "win-back"}).content.decode()
    assert "email → push → in_app" in html and "(held out)" in html
    assert "Last touch gives" in html
