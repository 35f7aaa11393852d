"""Campaigns sending through the one pipeline: local time per zone through the governor (quiet hours and
caps), templates rendered per locale and linted on the rendered content, throttle, cancel, exactly once."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from channels_app.services import template_create
from journeys.campaigns import (
    campaign_create,
    campaign_test_send,
    campaign_transition,
    campaigns_advance,
    campaigns_advance_due,
)
from journeys.models import Campaign, CampaignRecipient, CampaignStatus, MemberState
from orchestrator.models import Message, MessageStatus, Segment, Source
from orchestrator.work import due_work_run
from tests.governor.conftest import default_governor  # noqa: F401
from tests.governor.helpers import sent
from tests.orchestrator.factories import ContactPointFactory, RecipientFactory

pytestmark = pytest.mark.django_db

APPROVED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday; no DST change anywhere that week
PUSH = {"title": "Spring is here", "body": "New things for you.", "action_url": "app://spring"}


@pytest.fixture
def everyone(default_governor):  # noqa: F811
    return Segment.objects.create(name="Everyone", conditions=[])


def person(external_id, zone, *, locale="en-US", channel="push", **attributes):
    r = RecipientFactory(external_id=external_id, timezone=zone, locale=locale, attributes=attributes)
    address = f"tok-{external_id}" if channel == "push" else f"{external_id}@example.com"
    ContactPointFactory(recipient=r, channel=channel, address=address)
    return r


def launched(segment, *, at=APPROVED, **fields) -> Campaign:
    data = {
        "name": "Spring",
        "segment": segment.pk,
        "channel": "push",
        "purpose": "engagement",
        "content": PUSH,
    }
    campaign = campaign_create(data={**data, **fields}, now=at)
    for action in ("propose", "approve"):
        campaign = campaign_transition(campaign=campaign, action=action, now=at)
    return campaign


def decided(campaign) -> dict[str, Message]:
    members = CampaignRecipient.objects.filter(campaign=campaign, state=MemberState.DECIDED).select_related(
        "message", "recipient"
    )
    return {m.recipient.external_id: m.message for m in members}


def test_local_ten_oclock_decides_each_recipient_at_their_own_ten_through_the_governor(everyone):
    la = person("la", "America/Los_Angeles")  # UTC−8
    person("london", "UTC")
    person("tokyo", "Asia/Tokyo")  # UTC+9
    # A push an hour before its 10:00: the 1-push-per-4-h cap holds the campaign's until 13:30 local.
    sent(
        RecipientFactory._meta.model.objects.get(external_id="london"),
        datetime(2026, 3, 3, 9, 30, tzinfo=UTC),
        channel="push",
    )
    # Three engagement messages already today: the daily cap of 3 holds LA's until a slot frees.
    for hours in (3, 2, 1):
        sent(la, datetime(2026, 3, 3, 18, tzinfo=UTC) - timedelta(hours=hours), channel="email")
    campaign = launched(everyone, schedule={"local_time": "10:00", "date": "2026-03-03"})

    campaigns_advance(now=APPROVED)  # writes the audience: nobody is due yet
    assert decided(campaign) == {} and Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.SENDING
    campaigns_advance(now=datetime(2026, 3, 3, 0, 59, tzinfo=UTC))
    assert decided(campaign) == {}

    tokyo_ten = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    campaigns_advance(now=tokyo_ten)
    got = decided(campaign)
    assert set(got) == {"tokyo"}
    assert got["tokyo"].status == MessageStatus.ACCEPTED and got["tokyo"].decided_at == tokyo_ten

    london_ten = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    campaigns_advance(now=london_ten - timedelta(minutes=1))
    assert set(decided(campaign)) == {"tokyo"}
    campaigns_advance(now=london_ten)
    london = decided(campaign)["london"]
    assert london.status == MessageStatus.DEFERRED and london.decided_at == london_ten
    assert london.deliver_after == datetime(2026, 3, 3, 13, 30, tzinfo=UTC)
    assert "push" in london.rule.lower() or "4 h" in london.reason

    la_ten = datetime(2026, 3, 3, 18, 0, tzinfo=UTC)
    campaigns_advance(now=la_ten)
    la_message = decided(campaign)["la"]
    # Held by the daily cap past push's 4-hour shelf life: never sent late, and the reason says why.
    assert la_message.decided_at == la_ten and la_message.status == MessageStatus.EXPIRED
    assert "3 of 3" in la_message.reason, la_message.reason
    campaigns_advance(now=la_ten + timedelta(minutes=1))
    done = Campaign.objects.get(pk=campaign.pk)
    assert done.status == CampaignStatus.DONE and done.audience == 3


def test_a_local_time_in_quiet_hours_is_held_to_each_zones_morning(everyone):
    person("la", "America/Los_Angeles")
    person("tokyo", "Asia/Tokyo")
    campaign = launched(everyone, schedule={"local_time": "22:00", "date": "2026-03-03"})
    campaigns_advance(now=APPROVED)
    for now in (datetime(2026, 3, 3, 13, 0, tzinfo=UTC), datetime(2026, 3, 4, 6, 0, tzinfo=UTC)):
        campaigns_advance(now=now)
    got = decided(campaign)
    assert got["tokyo"].status == MessageStatus.DEFERRED and got["la"].status == MessageStatus.DEFERRED
    assert got["tokyo"].deliver_after == datetime(2026, 3, 3, 23, 0, tzinfo=UTC)  # 08:00 in Tokyo
    assert got["la"].deliver_after == datetime(2026, 3, 4, 16, 0, tzinfo=UTC)  # 08:00 in Los Angeles
    assert got["tokyo"].rule == "Night: push and SMS" and "21:00" in got["tokyo"].reason, got["tokyo"].reason


def test_a_template_speaks_each_recipients_language_and_a_missing_value_refuses_only_that_one(everyone):
    template_create(
        data={
            "key": "spring-mail",
            "channel": "email",
            "purpose": "promotional",
            "default_locale": "en",
            "locales": {
                "en": {"subject": "Hi {{ recipient.attributes.name }}", "body": "New: {{ data.item }}."},
                "pt-BR": {"subject": "Oi {{ recipient.attributes.name }}", "body": "Novo: {{ data.item }}."},
            },
        }
    )
    person("ana", "UTC", locale="pt-BR", channel="email", name="Ana")
    person("ben", "UTC", locale="en-GB", channel="email", name="Ben")
    person("nameless", "UTC", channel="email")
    campaign = launched(
        everyone,
        channel="email",
        purpose="promotional",
        content=None,
        template="spring-mail",
        data={"item": "shoes"},
    )
    campaigns_advance(now=APPROVED)
    got = decided(campaign)
    assert got["ana"].content == {"subject": "Oi Ana", "body": "Novo: shoes."}
    assert got["ben"].content == {"subject": "Hi Ben", "body": "New: shoes."}
    refused = CampaignRecipient.objects.get(campaign=campaign, recipient__external_id="nameless")
    assert refused.state == MemberState.REFUSED and "recipient.attributes.name is undefined" in refused.detail
    assert "line 1" in refused.detail and "spring-mail (en) subject" in refused.detail
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE


def test_the_lint_judges_the_rendered_push_at_send_time(everyone):
    template_create(
        data={
            "key": "hello-push",
            "channel": "push",
            "purpose": "engagement",
            "default_locale": "en",
            "locales": {
                "en": {"title": "Hi {{ recipient.attributes.name }}", "body": "Tap.", "action_url": "app://x"}
            },
        }
    )
    person("short", "UTC", name="Al")
    person("long", "UTC", name="Alexandrina Maximiliana Constantinopla de Bragança e Orléans")
    campaign = launched(everyone, content=None, template="hello-push")
    campaigns_advance(now=APPROVED)
    assert decided(campaign)["short"].content["title"] == "Hi Al"
    long = CampaignRecipient.objects.get(campaign=campaign, recipient__external_id="long")
    assert long.state == MemberState.REFUSED and "push_too_long" in long.detail or "characters" in long.detail
    assert not Message.objects.filter(recipient__external_id="long").exists()


def test_recipients_stream_in_id_ordered_batches_and_each_is_decided_once(everyone):
    people = [person(f"p{n}", "UTC") for n in range(5)]
    campaign = launched(everyone)
    work = campaigns_advance(now=APPROVED, batch_size=2)
    assert work.batches == 3 and work.decided == 5
    messages = Message.objects.filter(source=Source.CAMPAIGN).order_by("id")
    assert [m.recipient_id for m in messages] == [p.pk for p in people]
    assert all(m.source_ref == f"{campaign.pk} · Spring" for m in messages)
    again = campaigns_advance(now=APPROVED + timedelta(minutes=5))
    assert again.decided == 0 and Message.objects.filter(source=Source.CAMPAIGN).count() == 5


def test_a_throttle_sends_at_most_n_per_minute(everyone):
    for n in range(5):
        person(f"t{n}", "UTC")
    campaign = launched(everyone, throttle_per_minute=2)
    assert campaigns_advance(now=APPROVED).decided == 2
    assert campaigns_advance(now=APPROVED + timedelta(seconds=30)).decided == 0
    assert campaigns_advance(now=APPROVED + timedelta(seconds=61)).decided == 2
    assert campaigns_advance(now=APPROVED + timedelta(seconds=122)).decided == 1
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE


def test_cancel_mid_way_leaves_the_undecided_unsent(everyone, django_capture_on_commit_callbacks):
    for n in range(4):
        person(f"c{n}", "UTC")
    campaign = launched(everyone, throttle_per_minute=2)
    campaigns_advance(now=APPROVED)
    with django_capture_on_commit_callbacks(execute=True):
        campaign_transition(campaign=campaign, action="cancel", now=APPROVED + timedelta(seconds=10))
    campaigns_advance(now=APPROVED + timedelta(minutes=5))
    assert Message.objects.filter(source=Source.CAMPAIGN).count() == 2
    states = sorted(CampaignRecipient.objects.filter(campaign=campaign).values_list("state", flat=True))
    assert states == ["cancelled", "cancelled", "decided", "decided"]


def test_a_test_send_goes_to_one_named_recipient_before_approval(everyone, api):
    ana = person("ana", "UTC")
    campaign = campaign_create(
        data={
            "name": "Draft",
            "segment": everyone.pk,
            "channel": "push",
            "purpose": "engagement",
            "content": PUSH,
        },
        now=APPROVED,
    )
    message = campaign_test_send(campaign=campaign, recipient=ana, now=APPROVED)
    assert message.recipient_id == ana.pk and message.source == Source.CAMPAIGN
    assert message.source_ref.endswith("· test")
    resp = api.post(f"/api/v1/campaigns/{campaign.pk}/test/", {"recipient": "ana"}, format="json")
    assert resp.status_code == 201 and {"id", "status", "channel", "reason"} <= set(resp.json())
    assert (
        api.post(f"/api/v1/campaigns/{campaign.pk}/test/", {"recipient": "nobody"}, format="json").status_code
        == 404
    )
    person("mailonly", "UTC", channel="email")
    refused = api.post(f"/api/v1/campaigns/{campaign.pk}/test/", {"recipient": "mailonly"}, format="json")
    assert refused.status_code == 400 and "unreachable" in refused.json()["codes"]
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DRAFT


def test_the_due_work_pass_runs_campaigns(everyone):
    assert "journeys.campaigns.campaigns_advance_due" in settings.ORCHESTRATOR["DUE_WORK"]
    person("due", "UTC")
    campaign = launched(everyone)
    handled = due_work_run(now=APPROVED)
    assert handled["journeys.campaigns.campaigns_advance_due"] == 1
    assert Campaign.objects.get(pk=campaign.pk).status in (CampaignStatus.SENDING, CampaignStatus.DONE)


def test_the_due_work_pass_hands_a_big_campaign_to_campaign_tasks_tasks(
    everyone, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """More due members than one pass sends: CAMPAIGN_TASKS tasks go on with it and share it (each hands
    over to one successor when its time budget runs out); a pass that sent everything queues none."""
    import django_q.tasks

    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "CAMPAIGN_TASKS": 3}
    for n in range(5):
        person(f"big{n}", "UTC")
    campaign = launched(everyone)
    queued = []
    monkeypatch.setattr(django_q.tasks, "async_task", lambda func, *a, **kw: queued.append(func))
    for _ in range(2):  # the pass that starts it, then one that finds it sending (its tasks were lost)
        with django_capture_on_commit_callbacks(execute=True):
            assert campaigns_advance_due(now=APPROVED, limit=2) == 2
        assert queued == ["journeys.tasks.campaigns_advance_task"] * 3
        queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert campaigns_advance_due(now=APPROVED, limit=10) == 1
    assert queued == [] and Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
