"""cap-rules/, quiet-hours/, channel-pauses/ and the dry run governor/check/."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from governor.models import CapRule, ChannelPause, QuietHours
from orchestrator.authority import SERVICE
from orchestrator.models import Message, MessageStatus
from tests.conftest import token_client, user_with_roles
from tests.orchestrator.factories import RecipientFactory

from .helpers import AT, decide, sent

pytestmark = pytest.mark.django_db


@pytest.fixture
def team(django_user_model) -> APIClient:
    """The messaging team: may change the governor."""
    user = django_user_model.objects.create_user(username="team", password="team-pass")
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="governor"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


RULE = {"name": "Promo per week", "limit": 2, "window": "P7D", "channels": [], "purposes": ["promotional"]}


def test_the_default_governor_is_installed_and_listed(team, default_governor):
    body = team.get("/api/v1/cap-rules/").json()
    rules = {r["name"]: r for r in body["results"]}
    assert rules["Engagement + promotional, 24 h"]["window"] == "P1D"
    assert rules["Engagement + promotional, 24 h"]["limit"] == 3
    assert rules["Push engagement/promotional, 4 h"]["channels"] == ["push"]
    quiet = team.get("/api/v1/quiet-hours/").json()["results"]
    assert quiet[0]["start"] == "21:00" and quiet[0]["end"] == "08:00"
    assert sorted(quiet[0]["exempt_purposes"]) == ["alert", "transactional"]


@pytest.mark.parametrize("window,expected", [("PT4H", timedelta(hours=4)), ("02:00:00", timedelta(hours=2))])
def test_cap_rules_create_read_update_delete(team, no_governor, window, expected):
    resp = team.post("/api/v1/cap-rules/", {**RULE, "window": window}, format="json")
    assert resp.status_code == 201, resp.json()
    rule = CapRule.objects.get(pk=resp.json()["id"])
    assert rule.window == expected and rule.enabled
    resp = team.patch(f"/api/v1/cap-rules/{rule.pk}/", {"limit": 5, "enabled": False}, format="json")
    assert resp.status_code == 200 and resp.json()["limit"] == 5
    assert team.get(f"/api/v1/cap-rules/{rule.pk}/").json()["enabled"] is False
    assert team.delete(f"/api/v1/cap-rules/{rule.pk}/").status_code == 204
    assert not CapRule.objects.exists()


def test_a_new_rule_applies_to_the_next_decision(team, no_governor):
    r = RecipientFactory()
    sent(r, AT - timedelta(hours=1), purpose="promotional")
    assert decide(r, purpose="promotional").status == MessageStatus.ACCEPTED
    team.post("/api/v1/cap-rules/", {**RULE, "limit": 1}, format="json")
    assert decide(r, purpose="promotional").status == MessageStatus.DEFERRED


@pytest.mark.parametrize(
    "change,field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": -3}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"window": "PT0S"}, "window"),
        ({"window": "00:00:00"}, "window"),
        ({"window": "-PT1H"}, "window"),
        ({"window": "a day"}, "window"),
        ({"channels": ["fax"]}, "channels"),
        ({"channels": "push"}, "channels"),
        ({"purposes": ["spam"]}, "purposes"),
        ({"purposes": []}, "purposes"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_cap_rule_is_400_with_the_field_and_writes_nothing(team, no_governor, change, field):
    resp = team.post("/api/v1/cap-rules/", {**RULE, **change}, format="json")
    assert resp.status_code == 400, resp.json()
    assert field in resp.json() and resp.json()[field]
    assert not CapRule.objects.exists()


def test_bad_patch_changes_nothing(team, default_governor):
    rule = CapRule.objects.get(name="Engagement + promotional, 24 h")
    resp = team.patch(f"/api/v1/cap-rules/{rule.pk}/", {"limit": 9, "window": "PT0S"}, format="json")
    assert resp.status_code == 400 and "window" in resp.json()
    rule.refresh_from_db()
    assert rule.limit == 3


QUIET = {"name": "Lunch", "channels": ["push"], "start": "12:00", "end": "13:30", "exempt_purposes": []}


def test_quiet_hours_create_and_update(team, no_governor):
    resp = team.post("/api/v1/quiet-hours/", QUIET, format="json")
    assert resp.status_code == 201, resp.json()
    assert resp.json()["end"] == "13:30"
    qid = resp.json()["id"]
    resp = team.patch(f"/api/v1/quiet-hours/{qid}/", {"start": "22:00", "end": "07:00"}, format="json")
    assert resp.status_code == 200 and resp.json()["start"] == "22:00"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"start": "25:00"}, "start"),
        ({"end": "noon"}, "end"),
        ({"start": "12:00", "end": "12:00"}, "end"),
        ({"channels": ["pager"]}, "channels"),
        ({"exempt_purposes": ["gossip"]}, "exempt_purposes"),
    ],
)
def test_bad_quiet_hours_are_400_and_write_nothing(team, no_governor, change, field):
    resp = team.post("/api/v1/quiet-hours/", {**QUIET, **change}, format="json")
    assert resp.status_code == 400 and field in resp.json(), resp.json()
    assert not QuietHours.objects.exists()


def test_a_service_without_the_teams_role_may_read_but_not_change(django_user_model, default_governor):
    service = token_client(user_with_roles(django_user_model, "checkout", SERVICE))
    assert service.get("/api/v1/cap-rules/").status_code == 200
    refused = service.post("/api/v1/cap-rules/", RULE, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "missing_permission"
    assert "Messaging team" in refused.json()["detail"]
    assert service.post("/api/v1/channel-pauses/", {"channel": "push"}, format="json").status_code == 403
    assert not CapRule.objects.filter(name=RULE["name"]).exists()


def test_pause_and_resume_a_channel(team, no_governor):
    r = RecipientFactory()
    resp = team.post(
        "/api/v1/channel-pauses/", {"channel": "push", "mode": "defer", "note": "bad copy"}, format="json"
    )
    assert resp.status_code == 201, resp.json()
    assert resp.json()["active"] and resp.json()["paused_by"] == "team"
    held = decide(r, channel="push", at=AT)
    assert held.status == MessageStatus.DEFERRED and held.deliver_after is None
    assert team.get("/api/v1/channel-pauses/?active=1").json()["count"] == 1
    resp = team.post("/api/v1/channel-pauses/push/resume/")
    assert resp.status_code == 200 and resp.json() == {"channel": "push", "released": 1}
    held.refresh_from_db()
    assert held.deliver_after is not None
    assert not ChannelPause.objects.filter(resumed_at__isnull=True).exists()
    assert team.post("/api/v1/channel-pauses/push/resume/").status_code == 404
    assert team.post("/api/v1/channel-pauses/", {"channel": "fax"}, format="json").status_code == 400
    assert (
        team.post("/api/v1/channel-pauses/", {"channel": "sms", "mode": "x"}, format="json").status_code
        == 400
    )


def test_governor_check_is_a_dry_run(api, default_governor):
    r = RecipientFactory(external_id="c1")
    for hours in (1, 2, 3):
        sent(r, AT - timedelta(hours=hours))
    before = Message.objects.count()
    resp = api.post(
        "/api/v1/governor/check/",
        {"recipient": "c1", "channel": "email", "purpose": "promotional", "at": AT.isoformat()},
        format="json",
    )
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["status"] == "deferred" and body["rule"] == "Engagement + promotional, 24 h"
    assert body["reason"].startswith("3 of 3 engagement+promotional messages in the last 24 h")
    assert body["deliver_after"].startswith("2026-06-11T09:00")
    ok = api.post(
        "/api/v1/governor/check/", {"recipient": "c1", "channel": "email", "purpose": "alert"}, format="json"
    )
    assert ok.json()["status"] == "accepted"
    assert Message.objects.count() == before


@pytest.mark.parametrize(
    "body,code,field",
    [
        ({"recipient": "nobody", "channel": "email", "purpose": "alert"}, 404, None),
        ({"recipient": "c1", "channel": "fax", "purpose": "alert"}, 400, "channel"),
        ({"recipient": "c1", "channel": "email", "purpose": "gossip"}, 400, "purpose"),
        ({"recipient": "c1", "channel": "email", "purpose": "alert", "at": "yesterday"}, 400, "at"),
        ({"recipient": "c1", "channel": "email", "purpose": "alert", "priority": 101}, 400, "priority"),
    ],
)
def test_governor_check_bad_input(api, default_governor, body, code, field):
    RecipientFactory(external_id="c1")
    resp = api.post("/api/v1/governor/check/", body, format="json")
    assert resp.status_code == code
    if field:
        assert field in resp.json()
    assert not Message.objects.exists()


def test_send_api_returns_the_governors_decision(api, default_governor):
    from tests.orchestrator.factories import ReachableRecipientFactory

    ReachableRecipientFactory(external_id="s1")
    payload = {
        "recipient": "s1",
        "channel": "email",
        "purpose": "engagement",
        "content": {"subject": "Hi", "body": "Yo"},
    }
    statuses = [api.post("/api/v1/messages/", payload, format="json").json() for _ in range(4)]
    assert [s["status"] for s in statuses] == ["accepted"] * 3 + ["deferred"]
    assert statuses[3]["rule"] == "Engagement + promotional, 24 h" and statuses[3]["deliver_after"]
