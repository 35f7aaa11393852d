"""The governor in the admin: editable rules, pauses through services, the governor page."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from governor.models import CapRule, ChannelPause, QuietHours
from orchestrator.models import MessageStatus
from tests.orchestrator.factories import MessageFactory, RecipientFactory

pytestmark = pytest.mark.django_db


def test_the_governor_page_is_linked_from_the_admin_index(admin_client, default_governor):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:governor_governoroverview_changelist") in index


def test_the_governor_page_shows_volume_outcomes_rules_queue_and_sources(admin_client, default_governor):
    now = timezone.now()
    r = RecipientFactory(external_id="page-1")
    MessageFactory(recipient=r, channel="push", source="journey", source_ref="cart-recovery/nudge")
    MessageFactory(recipient=r, channel="email", source="campaign", source_ref="weekly")
    MessageFactory(
        recipient=r,
        status=MessageStatus.DEFERRED,
        accepted_at=None,
        deferred_at=now,
        deliver_after=now + timedelta(minutes=30),
        rule="Engagement + promotional, 24 h",
        reason="3 of 3 engagement+promotional messages in the last 24 h across all channels",
    )
    page = admin_client.get(reverse("admin:governor_governoroverview_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    for text in (
        "Volume per channel today",
        "Decisions by outcome today",
        "Decisions by rule today",
        "The deferred queue",
        "Who spends recipients",
        "Journey step: cart-recovery/nudge",
        "page-1",
        "Push engagement/promotional, 4 h",
        "21:00–08:00 local",
    ):
        assert text in html, text


def test_rules_and_quiet_hours_are_editable(admin_client, default_governor):
    rule = CapRule.objects.get(name="Engagement + promotional, 24 h")
    url = reverse("admin:governor_caprule_change", args=[rule.pk])
    assert admin_client.get(url).status_code == 200
    resp = admin_client.post(
        url,
        {"name": rule.name, "limit": 5, "window": "12:00:00", "purposes": ["engagement"], "enabled": "on"},
    )
    assert resp.status_code == 302, resp.content.decode()[:2000]
    rule.refresh_from_db()
    assert rule.limit == 5 and rule.window == timedelta(hours=12) and rule.channels == []
    bad = admin_client.post(url, {"name": rule.name, "limit": 0, "window": "12:00:00", "purposes": ["alert"]})
    assert bad.status_code == 200 and "at least 1" in bad.content.decode()
    quiet = QuietHours.objects.get()
    assert admin_client.get(reverse("admin:governor_quiethours_change", args=[quiet.pk])).status_code == 200
    assert admin_client.get(reverse("admin:governor_quiethours_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:governor_caprule_changelist")).status_code == 200


def test_pause_and_resume_from_the_admin(admin_client, no_governor):
    resp = admin_client.post(
        reverse("admin:governor_channelpause_add"), {"channel": "push", "mode": "defer", "note": "bad copy"}
    )
    assert resp.status_code == 302
    pause = ChannelPause.objects.get()
    assert pause.active and pause.paused_by == "admin"
    resp = admin_client.post(
        reverse("admin:governor_channelpause_changelist"),
        {"action": "resume", "_selected_action": [pause.pk]},
    )
    assert resp.status_code == 302
    pause.refresh_from_db()
    assert not pause.active and pause.resumed_by == "admin"


def test_seed_demo_installs_the_defaults_idempotently(no_governor):
    call_command("seed_demo", "--recipients", "5", "--no-progress")
    call_command("seed_demo", "--recipients", "5", "--no-progress")
    assert set(CapRule.objects.values_list("name", flat=True)) == {
        "Engagement + promotional, 24 h",
        "Push engagement/promotional, 4 h",
    }
    assert QuietHours.objects.count() == 1
