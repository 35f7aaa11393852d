"""Every role × action, in the API and in the admin (table-driven): who may, and the 403 that says why."""

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from governor.models import CapRule, ChannelPause
from journeys.demo import cart_recovery_definition
from journeys.models import Journey, JourneyStatus
from journeys.services import journey_create, journey_transition
from orchestrator.authority import CHANNEL_OWNER, MESSAGING_TEAM, SERVICE
from orchestrator.models import Message, Scope
from tests.conftest import personal_client, token_client, user_with_roles
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db

PUSH_EMAIL = {
    "slug": "owner-draft",
    "name": "Owner draft",
    "owner_channel": "push",
    "steps": [
        {
            "id": "a",
            "type": "send",
            "channel": "push",
            "purpose": "engagement",
            "content": {"title": "Hi", "body": "Your cart is saved.", "action_url": "app://cart"},
        },
        {"id": "b", "type": "wait", "duration": "PT2H"},
        {
            "id": "c",
            "type": "send",
            "channel": "email",
            "purpose": "engagement",
            "content": {"subject": "Your cart", "body": "The details."},
        },
    ],
}
WITH_SMS = {
    **PUSH_EMAIL,
    "slug": "sms-draft",
    "steps": [
        {
            "id": "a",
            "type": "send",
            "channel": "sms",
            "purpose": "transactional",
            "content": {"body": "Your code is 1234."},
        }
    ],
}
IN_APP = {
    "slug": "in-app-draft",
    "name": "In-app draft",
    "owner_channel": "in_app",
    "steps": [
        {
            "id": "a",
            "type": "send",
            "channel": "in_app",
            "purpose": "engagement",
            "content": {"title": "Hi", "body": "Welcome back.", "action_url": "app://home"},
        }
    ],
}


def definition(slug, **changes):
    return {**cart_recovery_definition(), "slug": slug, **changes}


@pytest.fixture
def world(django_user_model):
    """People in every role, and journeys in every state the actions need."""
    now = timezone.now()
    people = {
        "superuser": django_user_model.objects.create_superuser("root", "root@example.com", "root-pass"),
        "team": user_with_roles(django_user_model, "tess", MESSAGING_TEAM),
        "owner": user_with_roles(django_user_model, "pia", CHANNEL_OWNER, channels=["push", "email"]),
        "service": user_with_roles(django_user_model, "checkout", SERVICE),
    }
    proposer = user_with_roles(django_user_model, "paul", MESSAGING_TEAM)
    journey_create(definition=IN_APP, now=now, user=proposer)
    proposed = journey_create(definition=definition("proposed"), now=now, user=proposer)
    journey_transition(journey=proposed, action="propose", now=now, user=proposer)
    for slug, actions in (
        ("approved", ["propose", "approve"]),
        ("active", ["propose", "approve", "activate"]),
    ):
        journey = journey_create(definition=definition(slug), now=now)
        for action in actions:
            journey = journey_transition(journey=journey, action=action, now=now)
    own = journey_create(definition=PUSH_EMAIL, now=now, user=people["owner"])
    ReachableRecipientFactory(external_id="ada", timezone="UTC")
    return {"people": people, "rule": CapRule.objects.first(), "own": own}


def api_client(world, actor: str) -> APIClient:
    if actor == "anonymous":
        return APIClient()
    if actor == "service":
        return token_client(world["people"]["service"])
    if actor == "service-no-send":
        return token_client(world["people"]["service"], scopes=[s for s in Scope.values if s != "send"])
    return personal_client(world["people"][actor])


SEND = {
    "recipient": "ada",
    "channel": "email",
    "purpose": "transactional",
    "content": {"subject": "Receipt", "body": "Thanks for your order."},
}

# action → (method, path, body)
API_ACTIONS = {
    "create own-channel draft": ("post", "/api/v1/journeys/", {**PUSH_EMAIL, "slug": "new-draft"}),
    "create draft on sms": ("post", "/api/v1/journeys/", WITH_SMS),
    "read another team's draft": ("get", "/api/v1/journeys/in-app-draft/", None),
    "propose own draft": ("post", "/api/v1/journeys/owner-draft/propose/", {}),
    "approve": ("post", "/api/v1/journeys/proposed/approve/", {"comment": "ok"}),
    "activate": ("post", "/api/v1/journeys/approved/activate/", {}),
    "pause journey": ("post", "/api/v1/journeys/active/pause/", {}),
    "edit a cap rule": ("patch", "/api/v1/cap-rules/{rule}/", {"limit": 5}),
    "pause a channel": ("post", "/api/v1/channel-pauses/", {"channel": "push"}),
    "send": ("post", "/api/v1/messages/", SEND),
    "read a recipient": ("get", "/api/v1/recipients/ada/", None),
    "post an event": ("post", "/api/v1/events/", {"recipient": "ada", "name": "app_open"}),
}
Y, N = "allowed", "refused"
# actor → expected per action, in API_ACTIONS order.
API_TABLE = {
    "superuser": [Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y],
    "team": [Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y],
    "owner": [Y, N, N, Y, N, N, N, N, N, N, N, N],
    "service": [N, N, Y, N, N, N, N, N, N, Y, Y, Y],
    "service-no-send": [N, N, Y, N, N, N, N, N, N, N, Y, Y],
    "anonymous": [N] * 12,
}
API_CASES = [
    (actor, action, expected)
    for actor, row in API_TABLE.items()
    for action, expected in zip(API_ACTIONS, row, strict=True)
]


@pytest.mark.parametrize("actor, action, expected", API_CASES)
def test_api_role_by_action(world, actor, action, expected):
    method, path, body = API_ACTIONS[action]
    client = api_client(world, actor)
    response = getattr(client, method)(path.format(rule=world["rule"].pk), body, format="json")
    if expected == Y:
        assert response.status_code in (200, 201), (actor, action, response.content)
        return
    assert response.status_code in (401, 403), (actor, action, response.status_code, response.content)
    if actor != "anonymous":
        body = response.json()
        assert (
            body["code"]
            in ("missing_permission", "missing_scope", "channel_not_owned", "separation_of_duties")
            and body["detail"]
        ), body


def test_refusals_name_what_is_missing(world):
    owner = api_client(world, "owner")
    sms = owner.post("/api/v1/journeys/", WITH_SMS, format="json").json()
    assert sms["code"] == "channel_not_owned" and "sms" in sms["detail"], sms
    other = owner.get("/api/v1/journeys/in-app-draft/").json()
    assert other["code"] == "channel_not_owned" and "in_app" in other["detail"]
    owner.post("/api/v1/journeys/owner-draft/propose/", {}, format="json")
    approve = owner.post("/api/v1/journeys/owner-draft/approve/", {}, format="json").json()
    assert approve["code"] == "missing_permission" and "Messaging team" in approve["detail"]
    scope = api_client(world, "service-no-send").post("/api/v1/messages/", SEND, format="json").json()
    assert scope == {"code": "missing_scope", "detail": scope["detail"], "scope": "send"}
    assert "'send'" in scope["detail"]
    assert not Message.objects.exists() and not Journey.objects.filter(slug="sms-draft").exists()


def test_nobody_but_a_superuser_approves_their_own_proposal(world, settings):
    team = world["people"]["team"]
    now = timezone.now()
    journey = journey_create(definition=definition("mine"), now=now, user=team)
    journey_transition(journey=journey, action="propose", now=now, user=team)
    client = personal_client(team)
    refused = client.post("/api/v1/journeys/mine/approve/", {}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "separation_of_duties"
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "SELF_APPROVAL": True}  # a one-person team
    assert client.post("/api/v1/journeys/mine/approve/", {}, format="json").status_code == 200
    root = world["people"]["superuser"]
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "SELF_APPROVAL": False}
    own = journey_create(definition=definition("roots"), now=now, user=root)
    journey_transition(journey=own, action="propose", now=now, user=root)
    assert personal_client(root).post("/api/v1/journeys/roots/approve/", {}, format="json").status_code == 200


def test_an_owner_lists_only_journeys_on_their_channels(world):
    slugs = {j["slug"] for j in api_client(world, "owner").get("/api/v1/journeys/").json()}
    assert slugs == {"owner-draft"}
    assert len(api_client(world, "team").get("/api/v1/journeys/").json()) == 5


def test_a_revoked_token_stops_at_once_and_last_use_is_recorded(world):
    client = token_client(world["people"]["service"])
    assert client.get("/api/v1/recipients/ada/").status_code == 200
    client.token.refresh_from_db()
    assert client.token.last_used_at is not None
    client.token.revoked_at = timezone.now()
    client.token.save()
    assert client.get("/api/v1/recipients/ada/").status_code == 401


# ---- the admin ----------------------------------------------------------------------------------------


def admin_client(world, actor: str) -> Client:
    user = world["people"][actor]
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def ids(world):
    return {slug: pk for slug, pk in Journey.objects.values_list("slug", "pk")}


# action → a function(client, world) returning (status_code, did_it_happen)
def _approve(c, w):
    pk = ids(w)["proposed"]
    r = c.post(f"/admin/journeys/journey/{pk}/review/", {"decision": "approve", "comment": "ok"})
    return r.status_code, Journey.objects.get(pk=pk).status == JourneyStatus.APPROVED


def _activate(c, w):
    pk = ids(w)["approved"]
    r = c.post(f"/admin/journeys/journey/{pk}/transition/activate/")
    return r.status_code, Journey.objects.get(pk=pk).status == JourneyStatus.ACTIVE


def _cap_rule(c, w):
    rule = w["rule"]
    data = {"name": rule.name, "limit": 7, "window": "1 00:00:00", "purposes": rule.purposes, "enabled": "on"}
    r = c.post(f"/admin/governor/caprule/{rule.pk}/change/", data)
    return r.status_code, CapRule.objects.get(pk=rule.pk).limit == 7


def _pause(c, w):
    r = c.post("/admin/governor/channelpause/add/", {"channel": "push", "mode": "defer", "note": "x"})
    return r.status_code, ChannelPause.objects.exists()


def _read_other(c, w):
    r = c.get(f"/admin/journeys/journey/{ids(w)['in-app-draft']}/change/")
    return r.status_code, r.status_code == 200


def _build_own(c, w):
    r = c.get("/admin/journeys/journey/add/")
    return r.status_code, r.status_code == 200


def _tokens(c, w):
    r = c.get("/admin/orchestrator/servicetoken/add/")
    return r.status_code, r.status_code == 200


def _approve_button(c, w):
    html = c.get(f"/admin/journeys/journey/{ids(w)['proposed']}/change/").content.decode()
    return 200, "Review the proposal" in html


ADMIN_ACTIONS = {
    "approve": _approve,
    "activate": _activate,
    "edit a cap rule": _cap_rule,
    "pause a channel": _pause,
    "read another team's draft": _read_other,
    "open the step builder": _build_own,
    "manage tokens": _tokens,
    "see the review button": _approve_button,
}
ADMIN_TABLE = {
    "superuser": [Y] * 8,
    "team": [Y] * 8,
    "owner": [N, N, N, N, N, Y, N, N],
}
ADMIN_CASES = [
    (actor, action, expected)
    for actor, row in ADMIN_TABLE.items()
    for action, expected in zip(ADMIN_ACTIONS, row, strict=True)
]


@pytest.mark.parametrize("actor, action, expected", ADMIN_CASES)
def test_admin_role_by_action(world, actor, action, expected):
    status, happened = ADMIN_ACTIONS[action](admin_client(world, actor), world)
    assert happened is (expected == Y), (actor, action, status)
    if expected == N:
        assert status in (200, 302, 403)


@pytest.mark.parametrize(
    "body",
    [[1, 2], "text", {"comment": "a\x00b"}, {"comment": ["x"]}, {"comment": "x" * 6000}],
)
def test_bad_action_bodies_are_400_and_change_nothing(world, body):
    client = api_client(world, "team")
    response = client.post("/api/v1/journeys/proposed/approve/", body, format="json")
    assert response.status_code == 400, response.content
    assert Journey.objects.get(slug="proposed").status == JourneyStatus.PROPOSED


@pytest.mark.parametrize("body", [[1, 2], "text", None, {"slug": "a\x00b", "name": "x", "steps": []}])
def test_bad_journey_bodies_are_400_never_500(world, body):
    response = api_client(world, "team").post("/api/v1/journeys/", body, format="json")
    assert response.status_code == 400, response.content


def test_a_channel_owner_reads_only_their_own_journeys_reports(world):
    owner = api_client(world, "owner")
    assert owner.get("/api/v1/reports/attribution/").json()["code"] == "channel_not_owned"
    assert owner.get("/api/v1/reports/attribution/?journey=in-app-draft").status_code == 403
    assert owner.get("/api/v1/reports/attribution/?journey=owner-draft").status_code == 200
    assert owner.get("/api/v1/journeys/owner-draft/report/").status_code == 200
    assert owner.get("/api/v1/journeys/in-app-draft/report/").status_code == 403
    assert api_client(world, "team").get("/api/v1/reports/attribution/").status_code == 200
    browser = admin_client(world, "owner")
    page = browser.get("/admin/journeys/report/")
    assert page.status_code == 200 and "Owner draft" in page.content.decode()
    other = ids(world)["in-app-draft"]
    assert browser.get(f"/admin/journeys/report/?journey=in-app-draft&x={other}").status_code == 404
