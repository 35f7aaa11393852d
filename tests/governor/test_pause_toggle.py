"""Pausing a channel from its policy page and the governor overview: a toggle, the messaging team's call."""

import pytest
from django.test import Client

from governor.models import ChannelPause
from orchestrator.authority import CHANNEL_OWNER, MESSAGING_TEAM
from tests.conftest import user_with_roles

pytestmark = pytest.mark.django_db

URL = "/admin/governor/governoroverview/pause/{}/"


def login(django_user_model, name, role, **kw) -> Client:
    user = user_with_roles(django_user_model, name, role, **kw)
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def team(django_user_model):
    return login(django_user_model, "tess", MESSAGING_TEAM)


@pytest.fixture
def owner(django_user_model):
    return login(django_user_model, "pia", CHANNEL_OWNER, channels=["push"])


def test_the_messaging_team_pauses_and_resumes_from_the_overview(team):
    page = team.get("/admin/governor/governoroverview/").content.decode()
    assert 'id="channel-pauses"' in page and "Pause push" in page
    resp = team.post(
        URL.format("push"),
        {
            "action": "pause",
            "mode": "suppress",
            "note": "provider outage",
            "next": "/admin/governor/governoroverview/",
        },
    )
    assert resp.status_code == 302 and resp["Location"] == "/admin/governor/governoroverview/"
    pause = ChannelPause.objects.get(channel="push", resumed_at__isnull=True)
    assert (pause.mode, pause.note, pause.paused_by) == ("suppress", "provider outage", "tess")
    page = team.get("/admin/governor/governoroverview/").content.decode()
    assert "Resume push" in page and "provider outage" in page
    assert team.post(URL.format("push"), {"action": "resume"}).status_code == 302
    assert not ChannelPause.objects.filter(resumed_at__isnull=True).exists()


def test_the_toggle_is_on_the_channel_policy_page(team):
    from channels_app.models import ChannelPolicy

    policy = ChannelPolicy.objects.get(channel="sms")
    page = team.get(f"/admin/channels_app/channelpolicy/{policy.pk}/change/").content.decode()
    assert 'id="channel-pause"' in page and "Pause sms" in page
    resp = team.post(
        URL.format("sms"),
        {
            "action": "pause",
            "mode": "defer",
            "next": f"/admin/channels_app/channelpolicy/{policy.pk}/change/",
        },
    )
    assert resp["Location"].endswith(f"/channelpolicy/{policy.pk}/change/")
    assert "Resume sms" in team.get(resp["Location"]).content.decode()


def test_a_channel_owner_may_not_pause_even_their_own_channel(owner):
    resp = owner.post(URL.format("push"), {"action": "pause", "mode": "defer"})
    assert resp.status_code == 403
    assert not ChannelPause.objects.exists()
    from channels_app.models import ChannelPolicy

    policy = ChannelPolicy.objects.get(channel="push")
    page = owner.get(f"/admin/channels_app/channelpolicy/{policy.pk}/change/").content.decode()
    assert "sending" in page and "Pause push" not in page  # the state, without the button


def test_bad_toggle_input_is_a_400_naming_the_field_and_writes_nothing(team):
    assert team.post(URL.format("fax"), {"action": "pause"}).status_code == 400
    resp = team.post(URL.format("push"), {"action": "pause", "mode": "loud"})
    assert resp.status_code == 400 and b"mode" in resp.content
    assert team.post(URL.format("push"), {"action": "explode"}).status_code == 400
    assert team.get(URL.format("push")).status_code == 405
    assert not ChannelPause.objects.exists()


def test_an_unsafe_next_goes_back_to_the_overview(team):
    resp = team.post(URL.format("push"), {"action": "pause", "next": "https://evil.example.com/"})
    assert resp["Location"] == "/admin/governor/governoroverview/"
