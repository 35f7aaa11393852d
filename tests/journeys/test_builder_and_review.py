"""The step builder (forms, live check, drafts that keep what was typed, Propose) and the review page."""

import pytest
from django.test import Client

from journeys.models import Journey, JourneyStatus
from orchestrator.authority import CHANNEL_OWNER, MESSAGING_TEAM
from tests.conftest import user_with_roles

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def staffed(user):
    user.is_staff = True
    user.save()
    return user


@pytest.fixture
def owner(django_user_model):
    return staffed(user_with_roles(django_user_model, "pia", CHANNEL_OWNER, channels=["push", "email"]))


@pytest.fixture
def team(django_user_model):
    return staffed(user_with_roles(django_user_model, "tess", MESSAGING_TEAM))


def step(n, **fields):
    base = {
        "position": n,
        "id": f"s{n}",
        "type": "send",
        "purpose": "engagement",
        "on_suppressed": "continue",
    }
    base.update(fields)
    return {f"steps-{n}-{k}": v for k, v in base.items()}


def builder_post(slug="push-then-email", body="Your cart is saved.", **extra):
    data = {
        "slug": slug,
        "name": "Push then email",
        "owner_channel": "push",
        "reentry": "after_exit",
        "trigger_event": "cart_abandoned",
        "goal_event": "purchase",
        "goal_within_amount": "3",
        "goal_within_unit": "days",
        "steps-TOTAL_FORMS": "3",
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "100",
        **step(0, id="nudge", channel="push", title="Still there?", body=body, action_url="app://cart"),
        **step(1, id="pause", type="wait", wait_amount="2", wait_unit="hours"),
        **step(
            2, id="detail", channel="email", subject="Your cart", body="Sizes, reviews, delivery options."
        ),
    }
    data.update(extra)
    return data


def test_an_owner_builds_push_wait_email_and_the_definition_is_the_contracts(owner):
    response = login(owner).post("/admin/journeys/journey/add/", builder_post())
    assert response.status_code == 302, response.content.decode()[:2000]
    journey = Journey.objects.get(slug="push-then-email")
    d = journey.versions.get().definition
    assert [s["type"] for s in d["steps"]] == ["send", "wait", "send"]
    assert d["steps"][1]["duration"] == "PT2H" and d["goal"] == {"event": "purchase", "within": "P3D"}
    assert d["steps"][0]["content"] == {
        "title": "Still there?",
        "body": "Your cart is saved.",
        "action_url": "app://cart",
    }
    assert (journey.status, journey.created_by, journey.channels) == ("draft", owner, ["email", "push"])


def test_a_200_word_push_is_refused_beside_its_step_and_what_was_typed_is_kept(owner):
    long_body = " ".join(["word"] * 200)
    response = login(owner).post("/admin/journeys/journey/add/", builder_post(body=long_body))
    assert response.status_code == 200
    html = response.content.decode()
    assert "push_too_long" in html and "200 words" in html
    assert long_body in html and "Sizes, reviews, delivery options." in html, "what was typed is kept"
    assert not Journey.objects.exists()


def test_the_live_check_answers_per_step_fragments(owner):
    data = builder_post(body=" ".join(["word"] * 200))
    html = login(owner).post("/admin/journeys/journey/builder/check/", data).content.decode()
    assert 'id="check-steps-0" hx-swap-oob="true"' in html and "push_too_long" in html
    assert 'id="check-steps-2"' in html and "Fits the channel" in html.split('id="check-steps-2"')[1]


def test_reordering_follows_the_positions(owner):
    data = builder_post()
    data |= {"steps-0-position": "2", "steps-2-position": "0"}
    login(owner).post("/admin/journeys/journey/add/", data)
    ids = [s["id"] for s in Journey.objects.get().versions.get().definition["steps"]]
    assert ids == ["detail", "pause", "nudge"]


def test_an_owner_cannot_draft_sends_on_a_channel_they_do_not_own(owner):
    data = builder_post() | {"steps-2-channel": "sms", "steps-2-purpose": "transactional"}
    html = login(owner).post("/admin/journeys/journey/add/", data).content.decode()
    assert "You do not own SMS".lower() in html.lower() or "do not own sms" in html
    assert not Journey.objects.exists()


def test_propose_then_the_team_reviews_with_diff_lint_forecast_and_approves(owner, team):
    login(owner).post("/admin/journeys/journey/add/", builder_post() | {"_propose": "1"})
    journey = Journey.objects.get()
    assert journey.status == JourneyStatus.PROPOSED and journey.proposed_by == owner
    # The owner sees no approve button on their own proposal.
    assert "Approve" not in login(owner).get(f"/admin/journeys/journey/{journey.pk}/review/").content.decode()
    reviewer = login(team)
    page = reviewer.get(f"/admin/journeys/journey/{journey.pk}/review/").content.decode()
    assert "no live version yet" in page and "Forecast" in page and 'value="approve"' in page
    reviewer.post(
        f"/admin/journeys/journey/{journey.pk}/review/", {"decision": "approve", "comment": "Good copy."}
    )
    journey.refresh_from_db()
    assert (journey.status, journey.reviewed_by, journey.review_comment) == ("approved", team, "Good copy.")
    seen = login(owner).get(f"/admin/journeys/journey/{journey.pk}/change/").content.decode()
    assert "Approved" in seen and "Good copy." in seen


def test_a_rejection_comes_back_to_the_owner_with_the_comment(owner, team):
    login(owner).post("/admin/journeys/journey/add/", builder_post() | {"_propose": "1"})
    journey = Journey.objects.get()
    login(team).post(
        f"/admin/journeys/journey/{journey.pk}/review/", {"decision": "reject", "comment": "Too pushy."}
    )
    journey.refresh_from_db()
    assert journey.status == JourneyStatus.DRAFT
    seen = login(owner).get(f"/admin/journeys/journey/{journey.pk}/change/").content.decode()
    assert "Rejected" in seen and "Too pushy." in seen and "Edit steps" in seen
