"""Campaigns, segments and templates under the roles (table-driven, API and admin): channel owners write,
test and propose on their channels; the messaging team approves, rejects and cancels; nobody approves
their own proposal; services (the data plane) do none of it."""

import pytest
from django.test import Client
from django.utils import timezone

from journeys.campaigns import campaign_create, campaign_transition
from journeys.models import Campaign, CampaignStatus
from orchestrator.authority import CHANNEL_OWNER, MESSAGING_TEAM, SERVICE
from orchestrator.models import Segment
from tests.conftest import personal_client, token_client, user_with_roles
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db

EMAIL = {"subject": "Spring sale", "body": "Everything 20% off this week."}


def campaign_body(segment, channel="email", name="Owner's sale"):
    content = EMAIL if channel == "email" else {"body": "Your order shipped."}
    purpose = "promotional" if channel == "email" else "transactional"
    return {"name": name, "segment": segment.pk, "channel": channel, "purpose": purpose, "content": content}


@pytest.fixture
def world(django_user_model):
    now = timezone.now()
    people = {
        "team": user_with_roles(django_user_model, "tess", MESSAGING_TEAM),
        "owner": user_with_roles(django_user_model, "pia", CHANNEL_OWNER, channels=["push", "email"]),
        "service": user_with_roles(django_user_model, "checkout", SERVICE),
    }
    proposer = user_with_roles(django_user_model, "paul", MESSAGING_TEAM)
    segment = Segment.objects.create(name="Everyone", conditions=[{"field": "reachable", "op": "exists"}])
    ReachableRecipientFactory(external_id="ada")
    proposed = campaign_create(data=campaign_body(segment, name="Paul's sale"), now=now, user=proposer)
    campaign_transition(campaign=proposed, action="propose", now=now, user=proposer)
    sms = campaign_create(data=campaign_body(segment, channel="sms", name="SMS notice"), now=now)
    own = campaign_create(data=campaign_body(segment), now=now, user=people["owner"])
    return {"people": people, "segment": segment, "proposed": proposed, "sms": sms, "own": own}


def client_for(world, actor):
    if actor == "anonymous":
        from rest_framework.test import APIClient

        return APIClient()
    if actor == "service":
        return token_client(world["people"]["service"])
    return personal_client(world["people"][actor])


TEMPLATE = {
    "key": "note",
    "channel": "email",
    "default_locale": "en",
    "locales": {"en": {"subject": "Hello", "body": "Hi {{ recipient.external_id }}."}},
}

# action → (method, path, body); {x} filled from the world
ACTIONS = {
    "create an email campaign": ("post", "/api/v1/campaigns/", lambda w: campaign_body(w["segment"])),
    "create an sms campaign": ("post", "/api/v1/campaigns/", lambda w: campaign_body(w["segment"], "sms")),
    "read the sms campaign": ("get", "/api/v1/campaigns/{sms}/", None),
    "test own campaign": ("post", "/api/v1/campaigns/{own}/test/", lambda w: {"recipient": "ada"}),
    "propose own campaign": ("post", "/api/v1/campaigns/{own}/propose/", lambda w: {}),
    "approve a proposal": ("post", "/api/v1/campaigns/{proposed}/approve/", lambda w: {"comment": "ok"}),
    "cancel a campaign": ("post", "/api/v1/campaigns/{proposed}/cancel/", lambda w: {}),
    "read segments": ("get", "/api/v1/segments/", None),
    "create a segment": ("post", "/api/v1/segments/", lambda w: {"name": "New", "conditions": []}),
    "create an email template": ("post", "/api/v1/templates/", lambda w: TEMPLATE),
    "create an sms template": (
        "post",
        "/api/v1/templates/",
        lambda w: {**TEMPLATE, "key": "sms-note", "channel": "sms", "locales": {"en": {"body": "Code 1."}}},
    ),
}
Y, N = "allowed", "refused"
TABLE = {
    "team": [Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y],
    "owner": [Y, N, N, Y, Y, N, N, Y, N, Y, N],
    "service": [N] * 11,
    "anonymous": [N] * 11,
}
CASES = [
    (actor, action, want) for actor, row in TABLE.items() for action, want in zip(ACTIONS, row, strict=True)
]


@pytest.mark.parametrize("actor, action, expected", CASES)
def test_api_role_by_campaign_action(world, actor, action, expected):
    method, path, body = ACTIONS[action]
    ids = {"sms": world["sms"].pk, "own": world["own"].pk, "proposed": world["proposed"].pk}
    client = client_for(world, actor)
    response = getattr(client, method)(path.format(**ids), body(world) if body else None, format="json")
    if expected == Y:
        assert response.status_code in (200, 201), (actor, action, response.content)
        return
    assert response.status_code in (401, 403, 404), (actor, action, response.status_code, response.content)
    if actor != "anonymous" and response.status_code == 403:
        assert response.json()["code"] in ("missing_permission", "missing_scope", "channel_not_owned")


def test_nobody_approves_their_own_campaign_and_the_proposer_reads_the_review(world, django_user_model):
    team, owner = world["people"]["team"], world["people"]["owner"]
    own = world["own"]
    assert (
        personal_client(owner).post(f"/api/v1/campaigns/{own.pk}/propose/", {}, format="json").status_code
        == 200
    )
    refused = personal_client(owner).post(f"/api/v1/campaigns/{own.pk}/approve/", {}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "missing_permission"
    mine = campaign_create(data=campaign_body(world["segment"], name="Tess's"), now=timezone.now(), user=team)
    campaign_transition(campaign=mine, action="propose", now=timezone.now(), user=team)
    own_approval = personal_client(team).post(f"/api/v1/campaigns/{mine.pk}/approve/", {}, format="json")
    assert own_approval.status_code == 403 and own_approval.json()["code"] == "separation_of_duties"
    body = (
        personal_client(team)
        .post(f"/api/v1/campaigns/{own.pk}/reject/", {"comment": "Too pushy."}, format="json")
        .json()
    )
    assert body["status"] == "draft" and body["review_outcome"] == "rejected"
    seen = personal_client(owner).get(f"/api/v1/campaigns/{own.pk}/").json()
    assert seen["reviewed_by"] == "tess" and seen["review_comment"] == "Too pushy."


def test_an_owner_lists_only_campaigns_on_their_channels(world):
    names = {c["name"] for c in client_for(world, "owner").get("/api/v1/campaigns/").json()["results"]}
    assert names == {"Owner's sale", "Paul's sale"}  # email: theirs; the SMS notice is not
    assert len(client_for(world, "team").get("/api/v1/campaigns/").json()["results"]) == 3


def test_the_admin_shows_an_owner_no_approve_button_and_refuses_the_action(world):
    owner = world["people"]["owner"]
    owner.is_staff = True
    owner.save()
    browser = Client()
    browser.force_login(owner)
    proposed = world["proposed"]
    page = browser.get(f"/admin/journeys/campaign/{proposed.pk}/change/").content.decode()
    assert "/campaign/approve/" not in page and "/campaign/cancel/" not in page
    browser.post(f"/admin/journeys/campaign/{proposed.pk}/campaign/approve/")
    assert Campaign.objects.get(pk=proposed.pk).status == CampaignStatus.PROPOSED
    assert browser.get(f"/admin/journeys/campaign/{world['sms'].pk}/change/").status_code in (302, 403, 404)
