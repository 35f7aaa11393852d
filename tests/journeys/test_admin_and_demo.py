"""The journeys admin (readable steps, counts, lifecycle, step history, enroll action) and the demo."""

import io

import pytest
from django.core.management import call_command

from journeys.demo import seed
from journeys.models import Enrollment, Journey, JourneyStatus
from journeys.services import enrollment_create
from tests.journeys.factories import active_journey
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db


def test_the_journey_page_shows_steps_as_a_flow_with_counts(admin_client, clock, committed):
    journey = active_journey()
    for _ in range(2):
        committed(enrollment_create, journey=journey, recipient=ReachableRecipientFactory(), now=clock.now)
    listing = admin_client.get("/admin/journeys/journey/").content.decode()
    assert "cart-recovery" in listing and ">2<" in listing  # two waiting
    html = admin_client.get(f"/admin/journeys/journey/{journey.pk}/change/").content.decode()
    assert "Send on push (engagement): “Still thinking it over? — Your cart is saved.”" in html
    assert "Wait 2 h" in html and "Wait for app_open (at most 7 d, then go on)" in html
    assert "Version 1 — live" in html and '"steps"' not in html, "steps, not raw JSON"
    assert 'value="Pause"' in html


def test_lifecycle_buttons_call_the_services(admin_client):
    journey = active_journey()
    url = f"/admin/journeys/journey/{journey.pk}/transition/pause/"
    admin_client.post(url)
    journey.refresh_from_db()
    assert journey.status == JourneyStatus.PAUSED
    response = admin_client.post(url, follow=True)
    assert "Cannot pause" in response.content.decode()


def test_an_enrollment_page_shows_its_step_history(admin_client, clock, committed):
    journey = active_journey()
    enrollment = committed(
        enrollment_create, journey=journey, recipient=ReachableRecipientFactory(), now=clock.now
    )
    html = admin_client.get(f"/admin/journeys/enrollment/{enrollment.pk}/change/").content.decode()
    assert "nudge" in html and "pause" in html and "waiting" in html
    assert admin_client.get("/admin/journeys/enrollment/add/").status_code == 403


def test_the_enroll_action_enrolls_a_filtered_recipient_list(
    admin_client, clock, django_capture_on_commit_callbacks
):
    journey = active_journey()
    recipients = [ReachableRecipientFactory() for _ in range(3)]
    ids = [str(r.pk) for r in recipients]
    page = admin_client.post(
        "/admin/orchestrator/recipient/", {"action": "enroll_in_journey", "_selected_action": ids}
    )
    assert page.status_code == 200 and "Enroll 3 selected recipients" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/orchestrator/recipient/",
            {"action": "enroll_in_journey", "_selected_action": ids, "journey": journey.pk, "apply": "1"},
            follow=True,
        )
    assert "3 enrolled, 0 skipped" in response.content.decode()
    assert Enrollment.objects.filter(journey=journey).count() == 3
    assert Enrollment.objects.filter(journey=journey, step_id="pause").count() == 3, "first step ran"


def test_seed_demo_installs_cart_recovery_active_and_is_idempotent(django_capture_on_commit_callbacks):
    for i in range(6):
        ReachableRecipientFactory(external_id=f"demo-x-{i:03d}")
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        seed(stdout=out)
        seed(stdout=out)
    journey = Journey.objects.get(slug="cart-recovery")
    assert journey.status == JourneyStatus.ACTIVE and journey.versions.count() == 1
    assert Enrollment.objects.filter(journey=journey).count() == 5
    assert "5 demo recipients enrolled" in out.getvalue()


def test_the_seed_demo_command_includes_the_journey():
    call_command("seed_demo", "--recipients", "4", "--no-progress", stdout=io.StringIO())
    assert Journey.objects.get(slug="cart-recovery").status == JourneyStatus.ACTIVE
