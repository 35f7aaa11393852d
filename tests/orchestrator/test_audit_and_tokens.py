"""Audit (who, when, what, from where, per object and as one list), service tokens in the admin, the
control room, and personal tokens from drf_create_token."""

import io
import re

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from governor.models import CapRule
from orchestrator.authority import CHANNEL_OWNER, MESSAGING_TEAM
from orchestrator.models import ServiceToken, token_hash
from tests.conftest import personal_client, user_with_roles

pytestmark = pytest.mark.django_db

RULE = {"name": "Promo per week", "limit": 2, "window": "P7D", "channels": [], "purposes": ["promotional"]}


@pytest.fixture
def team(django_user_model):
    user = user_with_roles(django_user_model, "tess", MESSAGING_TEAM)
    user.is_staff = True
    user.save()
    return user


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_changes_are_recorded_with_who_and_where_from(team, settings):
    personal_client(team).post("/api/v1/cap-rules/", RULE, format="json")
    rule = CapRule.objects.get(name=RULE["name"])
    data = {
        "name": rule.name,
        "limit": 4,
        "window": "7 00:00:00",
        "purposes": ["promotional"],
        "enabled": "on",
    }
    browser(team).post(f"/admin/governor/caprule/{rule.pk}/change/", data)
    created, changed = rule.history.order_by("history_date")
    assert (created.history_user, created.history_source, created.history_type) == (team, "api", "+")
    assert (changed.history_user, changed.history_source, changed.limit) == (team, "admin", 4)
    assert [c.field for c in changed.diff_against(created).changes] == ["limit"]


def test_a_command_records_itself_as_the_source():
    from journeys.models import Journey

    call_command("seed_demo", "--recipients", "2", "--no-progress", stdout=io.StringIO())
    record = Journey.history.filter(slug="cart-recovery").order_by("history_date").first()
    assert (record.history_source, record.history_user) == ("command: seed_demo", None)


def test_the_audit_log_lists_every_change_and_each_object_has_its_history(team):
    client = personal_client(team)
    client.post("/api/v1/cap-rules/", RULE, format="json")
    client.post("/api/v1/channel-pauses/", {"channel": "push", "note": "bad copy"}, format="json")
    page = browser(team).get("/admin/orchestrator/auditlog/").content.decode()
    assert "Promo per week" in page and "push paused" in page and "tess" in page
    assert (
        browser(team)
        .get("/admin/orchestrator/auditlog/?source=admin")
        .content.decode()
        .count("Promo per week")
        == 0
    )
    rule = CapRule.objects.get(name=RULE["name"])
    history = browser(team).get(f"/admin/governor/caprule/{rule.pk}/history/").content.decode()
    assert "tess" in history and "api" in history


def test_a_token_is_shown_once_stored_hashed_and_revocable_in_the_admin(team):
    client = browser(team)
    page = client.post(
        "/admin/orchestrator/servicetoken/add/", {"name": "checkout", "scopes": ["send", "recipients:read"]}
    ).content.decode()
    raw = re.search(r'id="token-key"[^>]*>(orch_[^<]+)<', page).group(1)
    token = ServiceToken.objects.get(name="checkout")
    assert token.key_hash == token_hash(raw) and raw not in str(ServiceToken.objects.values().get())
    assert token.user.username == "svc-checkout" and token.user.groups.filter(name="Service").exists()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/journeys/").json()["code"] == "missing_scope"
    assert raw not in client.get(f"/admin/orchestrator/servicetoken/{token.pk}/change/").content.decode()
    client.post("/admin/orchestrator/servicetoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert api.get("/api/v1/journeys/").status_code == 401


def test_drf_create_token_acts_with_the_users_roles(django_user_model, settings):
    owner = user_with_roles(django_user_model, "pia", CHANNEL_OWNER, channels=["push"])
    out = io.StringIO()
    call_command("drf_create_token", "pia", stdout=out)
    key = Token.objects.get(user=owner).key
    assert key in out.getvalue()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/journeys/").status_code == 200
    assert api.get("/api/v1/cap-rules/").status_code == 200
    assert api.post("/api/v1/cap-rules/", RULE, format="json").status_code == 403


def test_the_control_room_for_the_team_and_for_a_channel_owner(team, django_user_model):
    home = browser(team).get("/admin/").content.decode()
    for section in ("cr-sends", "cr-queue", "cr-dead", "cr-tasks", "cr-review"):
        assert f'id="{section}"' in home
    owner = user_with_roles(django_user_model, "pia", CHANNEL_OWNER, channels=["push"])
    owner.is_staff = True
    owner.save()
    mine = browser(owner).get("/admin/").content.decode()
    assert 'id="cr-drafts"' in mine and 'id="cr-sends"' not in mine


def test_every_permission_a_role_starts_with_exists():
    from django.contrib.auth.models import Group, Permission

    from orchestrator.roles import ROLE_PERMISSIONS

    for role, perms in ROLE_PERMISSIONS.items():
        granted = {
            f"{app}.{code}"
            for app, code in Permission.objects.filter(group__name=role).values_list(
                "content_type__app_label", "codename"
            )
        }
        assert set(perms) <= granted, (role, sorted(set(perms) - granted))
    assert Group.objects.filter(name__in=ROLE_PERMISSIONS).count() == len(ROLE_PERMISSIONS)
