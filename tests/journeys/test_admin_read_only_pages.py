"""Read-only pages look read-only, and labels name things the way people know them."""

import pytest
from django.utils import timezone

from journeys.models import EnrollmentStatus, JourneyStatus
from orchestrator.icons import step_icon

from .factories import EnrollmentFactory, JourneyFactory, JourneyVersionFactory

pytestmark = pytest.mark.django_db


def test_the_journey_page_has_no_save_buttons_and_no_input(admin_client):
    version = JourneyVersionFactory(journey=JourneyFactory(slug="cart-recovery", status=JourneyStatus.ACTIVE))
    page = admin_client.get(f"/admin/journeys/journey/{version.journey.pk}/change/").content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page and 'name="_addanother"' not in page
    assert 'name="reentry_cooldown"' not in page
    # The steps' icons are inline SVG (no emoji font needed), the hourglass included.
    assert 'class="orch-icon orch-icon-wait"' in page and "⌛" not in page


def test_labels_use_external_ids_and_journey_names():
    enrollment = EnrollmentFactory(
        recipient__external_id="ada", version__journey__name="Cart recovery", status=EnrollmentStatus.ACTIVE
    )
    assert str(enrollment) == "ada in Cart recovery (active)"


def test_a_converted_enrollment_waits_for_nothing(admin_client):
    done = EnrollmentFactory(status=EnrollmentStatus.CONVERTED, ended_at=timezone.now(), waiting="")
    EnrollmentFactory(status=EnrollmentStatus.ACTIVE, waiting="event", wait_event="app_open")
    listing = admin_client.get("/admin/journeys/enrollment/").content.decode()
    assert "nothing: converted" in listing and "the event app_open" in listing
    page = admin_client.get(f"/admin/journeys/enrollment/{done.pk}/change/").content.decode()
    assert "nothing: converted" in page and ">Due<" not in page


def test_step_icons_are_svg_for_every_step_type():
    for kind in ("send", "wait", "wait_for_event", "branch", "exit", "unknown"):
        assert step_icon(kind).startswith("<svg ")
