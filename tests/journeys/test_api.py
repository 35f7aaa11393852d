"""The journeys API: definitions validated with step/field/reason, the lifecycle, versions, enrollment."""

import copy

import pytest

from channels_app import lint
from journeys.demo import cart_recovery_definition
from journeys.models import Enrollment, Journey, JourneyVersion
from tests.journeys.factories import active_journey
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db


def definition(**changes):
    d = cart_recovery_definition()
    d.update(changes)
    return d


def with_step(index, **changes):
    d = cart_recovery_definition()
    d["steps"][index] = {**d["steps"][index], **changes}
    return d


def assert_refused(response, step, field, code):
    assert response.status_code == 400, response.content
    body = response.json()
    assert {"step": step, "field": field, "code": code} in [
        {k: e[k] for k in ("step", "field", "code")} for e in body["errors"]
    ], body
    assert body["definition"] and all(isinstance(m, str) for m in body["definition"])
    assert not Journey.objects.exists() and not JourneyVersion.objects.exists()


def test_a_valid_definition_creates_a_draft_with_version_one(api):
    response = api.post("/api/v1/journeys/", cart_recovery_definition(), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["slug"], body["status"], body["version"]) == ("cart-recovery", "draft", 1)
    assert body["definition"]["steps"][0]["id"] == "nudge"


@pytest.mark.parametrize(
    "bad, step, field, code",
    [
        (with_step(1, type="teleport"), "pause", "type", "unknown_step_type"),
        (with_step(1, duration="-PT2H"), "pause", "duration", "non_positive_duration"),
        (with_step(1, duration="PT0S"), "pause", "duration", "non_positive_duration"),
        (with_step(1, duration="two hours"), "pause", "duration", "invalid_duration"),
        (with_step(3, timeout="-P1D"), "visit", "timeout", "non_positive_duration"),
        (with_step(2, id="nudge"), "nudge", "id", "duplicate_id"),
        (with_step(0, channel="fax"), "nudge", "channel", "invalid_channel"),
    ],
)
def test_bad_definitions_are_refused_with_step_field_and_reason(api, bad, step, field, code):
    assert_refused(api.post("/api/v1/journeys/", bad, format="json"), step, field, code)


def test_a_branch_to_a_missing_step_is_refused(api):
    d = cart_recovery_definition()
    d["steps"].insert(2, {"id": "check", "type": "branch", "if": "engaged", "then": "nowhere"})
    assert_refused(api.post("/api/v1/journeys/", d, format="json"), "check", "then", "unknown_step")


def test_a_cycle_without_a_wait_is_refused_but_a_cycle_through_a_wait_is_fine(api):
    d = cart_recovery_definition()
    d["steps"].insert(
        3, {"id": "again", "type": "branch", "if": "engaged", "then": "detail", "else": "visit"}
    )
    response = api.post("/api/v1/journeys/", d, format="json")
    assert_refused(response, "detail", "then", "cycle_without_wait")
    assert "detail → again → detail" in response.json()["detail"]

    d["steps"][3]["then"] = "pause"  # pause is a wait: the loop can only come round after 2 h
    assert api.post("/api/v1/journeys/", d, format="json").status_code == 201


def test_a_send_the_channel_lint_blocks_is_refused(api, monkeypatch):
    def lint_push_length(*, channel, purpose, content):
        if channel == "push" and len(content.get("body", "").split()) > 30:
            return [lint.Violation("push_too_long", lint.Severity.BLOCK, "A push carries at most 30 words.")]
        return []

    monkeypatch.setattr("journeys.definition.message_lint", lint_push_length)
    bad = with_step(0, content={"title": "Hi", "body": "word " * 200})
    response = api.post("/api/v1/journeys/", bad, format="json")
    assert_refused(response, "nudge", "content", "push_too_long")
    assert "at most 30 words" in response.json()["detail"]


def test_the_lifecycle_and_illegal_transitions(api, api_reviewer):
    api.post("/api/v1/journeys/", cart_recovery_definition(), format="json")
    url = "/api/v1/journeys/cart-recovery"
    assert api.post(f"{url}/activate/").status_code == 409
    assert api.post(f"{url}/propose/").json()["status"] == "proposed"
    assert api_reviewer.post(f"{url}/reject/").json()["status"] == "draft"
    api.post(f"{url}/propose/")
    assert api.post(f"{url}/approve/").json()["code"] == "separation_of_duties"
    approved = api_reviewer.post(f"{url}/approve/").json()
    assert (approved["status"], approved["live_version"]) == ("approved", 1)
    assert api.post(f"{url}/propose/").status_code == 409
    assert api.post(f"{url}/activate/").json()["status"] == "active"
    assert api.post(f"{url}/pause/").json()["status"] == "paused"
    assert api.post(f"{url}/activate/").json()["status"] == "active"
    response = api_reviewer.post(f"{url}/approve/")
    assert response.status_code == 409 and response.json()["code"] == "illegal_transition"
    assert api.post(f"{url}/archive/").json()["status"] == "archived"
    assert api.post(f"{url}/frobnicate/").status_code == 404
    assert api.post("/api/v1/journeys/nope/propose/").status_code == 404


def test_patch_edits_the_draft_then_a_change_after_approval_makes_a_new_version(
    api, api_reviewer, clock, committed
):
    api.post("/api/v1/journeys/", cart_recovery_definition(), format="json")
    url = "/api/v1/journeys/cart-recovery/"
    assert api.patch(url, {"name": "Cart rescue"}, format="json").json()["version"] == 1
    bad = api.patch(url, {"steps": []}, format="json")
    assert bad.status_code == 400 and JourneyVersion.objects.get().definition["name"] == "Cart rescue"
    for action in ("propose", "approve", "activate"):
        (api_reviewer if action == "approve" else api).post(f"{url}{action}/")
    assert api.patch(url, {"name": "Too late"}, format="json").status_code == 409

    ada = ReachableRecipientFactory(external_id="ada")
    committed(api.post, f"{url}enrollments/", {"recipient": "ada"}, format="json")
    api.post(f"{url}pause/")
    assert api.post(f"{url}revise/").json()["status"] == "draft"
    steps = copy.deepcopy(cart_recovery_definition()["steps"])
    steps[1]["duration"] = "PT4H"
    body = api.patch(url, {"steps": steps}, format="json").json()
    assert (body["version"], body["live_version"]) == (2, 1)
    v1 = JourneyVersion.objects.get(number=1)
    assert v1.definition["steps"][1]["duration"] == "PT2H", "an approved version never changes"
    for action in ("propose", "approve", "activate"):
        (api_reviewer if action == "approve" else api).post(f"{url}{action}/")
    assert api.get(url).json()["live_version"] == 2
    assert Enrollment.objects.get(recipient=ada).version == v1, "enrollments stay on the version they entered"


def test_enrolling_needs_an_active_journey_and_a_known_recipient(api, committed):
    api.post("/api/v1/journeys/", cart_recovery_definition(), format="json")
    ReachableRecipientFactory(external_id="ada")
    response = api.post("/api/v1/journeys/cart-recovery/enrollments/", {"recipient": "ada"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "journey_not_active"
    assert not Enrollment.objects.exists()


def test_enrolling_through_the_api_runs_the_first_step(api, clock, committed):
    active_journey()
    ReachableRecipientFactory(external_id="ada")
    url = "/api/v1/journeys/cart-recovery/enrollments/"
    assert api.post(url, {"recipient": "nobody"}, format="json").status_code == 404
    response = committed(api.post, url, {"recipient": "ada"}, format="json")
    assert response.status_code == 201, response.content
    enrollment = Enrollment.objects.get()
    assert (enrollment.step_id, enrollment.waiting) == ("pause", "time")
    again = api.post(url, {"recipient": "ada"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "reentry_refused"
    listed = api.get(url).json()
    assert listed["count"] == 1 and listed["results"][0]["recipient"] == "ada"
    assert api.get(url, {"status": "converted"}).json()["count"] == 0
    assert api.get(url, {"recipient": "ada", "status": "active"}).json()["count"] == 1
    journey = api.get("/api/v1/journeys/cart-recovery/").json()
    assert journey["counts"] == {"active": 0, "waiting": 1, "converted": 0, "exited": 0, "errored": 0}


def test_journeys_require_authentication(client):
    assert client.get("/api/v1/journeys/").status_code in (401, 403)


def test_a_bad_slug_or_a_slug_change_is_refused(api):
    assert_refused(
        api.post("/api/v1/journeys/", definition(slug="no spaces"), format="json"), "", "slug", "invalid_slug"
    )
    api.post("/api/v1/journeys/", cart_recovery_definition(), format="json")
    response = api.patch("/api/v1/journeys/cart-recovery/", {"slug": "other"}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "slug_mismatch"
    assert api.post("/api/v1/journeys/", cart_recovery_definition(), format="json").status_code == 409


def test_an_approved_version_cannot_be_edited_even_directly():
    from django.core.exceptions import ValidationError

    journey = active_journey()
    version = journey.live_version
    version.definition = {**version.definition, "name": "Sneaky"}
    with pytest.raises(ValidationError):
        version.save()
