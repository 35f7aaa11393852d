"""Next best channel for `auto`: the editable job fit and lint, the governor's own view (go now or wait),
opt-outs, engagement and the journey's history."""

from datetime import UTC, datetime, timedelta

import pytest

from channels_app.models import ChannelPolicy
from governor.models import PauseMode
from governor.services import channel_pause
from orchestrator.channel_choice import ChoiceRequest, channel_choose, channels_choose_bulk
from orchestrator.models import Channel, MessageStatus, Purpose
from orchestrator.pipeline import SendRefused, message_send
from tests.orchestrator.factories import (
    ContactPointFactory,
    MessageFactory,
    PreferenceFactory,
    ReachableRecipientFactory,
)

pytestmark = pytest.mark.django_db

# A Wednesday noon in UTC: outside the default quiet hours (21:00–08:00) for UTC recipients.
NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
SHORT = {"title": "Back in stock", "body": "The shoes you liked are back.", "action_url": "app://p/1"}
ALL = {Channel.EMAIL, Channel.PUSH, Channel.IN_APP, Channel.SMS}


def choose(recipient, purpose=Purpose.ENGAGEMENT, content=SHORT, reachable=ALL, avoid=frozenset(), at=NOON):
    return channel_choose(
        recipient=recipient, purpose=purpose, content=content, reachable=set(reachable), avoid=avoid, at=at
    )


def test_a_short_urgent_engagement_message_goes_to_push_with_a_reason():
    choice = choose(ReachableRecipientFactory())
    assert choice.channel == Channel.PUSH
    assert choice.reason.startswith("push can go now: fits engagement 7/10")
    # What it weighed: the other channels, and why the ones it could not use were passed over.
    assert "in-app can go now" in choice.reason
    assert "email: email_no_subject" in choice.reason and "SMS: not for engagement" in choice.reason


def test_sms_never_carries_engagement_but_may_carry_an_alert():
    r = ReachableRecipientFactory()
    assert choose(r, reachable={Channel.SMS}) is None
    assert choose(r, purpose=Purpose.ALERT, reachable={Channel.SMS}).channel == Channel.SMS


def test_the_job_fit_comes_from_the_editable_channel_policy():
    r = ReachableRecipientFactory()
    ChannelPolicy.objects.filter(channel=Channel.PUSH).update(
        purpose_fit={"transactional": 7, "alert": 9, "engagement": 0, "promotional": 4}
    )
    choice = choose(r)
    assert choice.channel == Channel.IN_APP and "push: not for engagement" in choice.reason


def test_an_opt_out_removes_the_channel():
    r = ReachableRecipientFactory()
    PreferenceFactory(recipient=r, channel=Channel.PUSH, purpose=Purpose.ENGAGEMENT, opted_in=False)
    choice = choose(r)
    assert choice.channel != Channel.PUSH and "push: opted out of engagement" in choice.reason


def test_content_the_push_lint_refuses_goes_elsewhere():
    """No fixed length threshold: the push policy's own limits (editable) decide what a push can carry."""
    content = {"subject": "Everything about your order", "title": "Your order", "body": "Details. " * 80}
    choice = choose(ReachableRecipientFactory(), content=content)
    assert choice.channel == Channel.EMAIL and "push: push_too_long" in choice.reason
    ChannelPolicy.objects.filter(channel=Channel.PUSH).update(body_max_chars=None, body_max_words=None)
    ChannelPolicy.objects.filter(channel=Channel.IN_APP).update(body_max_chars=None)
    assert choose(ReachableRecipientFactory(), content=content).channel == Channel.PUSH


def test_recent_engagement_tips_the_choice():
    r = ReachableRecipientFactory()
    for _ in range(4):
        MessageFactory(
            recipient=r,
            channel=Channel.IN_APP,
            status=MessageStatus.OPENED,
            created_at=NOON - timedelta(days=3),
        )
    choice = choose(r)
    assert choice.channel == Channel.IN_APP and "opened or clicked 4 recent messages there" in choice.reason


def test_a_channel_used_in_this_journey_is_avoided():
    choice = choose(ReachableRecipientFactory(), avoid=frozenset({Channel.PUSH}))
    assert choice.channel != Channel.PUSH and "push can go now (already used in this journey)" in (
        choice.reason
    )


# ---- `auto` asks the governor --------------------------------------------------------------------------


def test_push_paused_goes_to_a_channel_that_can_go_now():
    channel_pause(channel=Channel.PUSH, mode=PauseMode.DEFER)
    choice = choose(ReachableRecipientFactory())
    assert choice.channel == Channel.IN_APP
    assert choice.reason.startswith("in-app can go now") and "push is paused" in choice.reason


def test_push_in_quiet_hours_goes_to_a_channel_that_can_go_now():
    paris = ReachableRecipientFactory(timezone="Europe/Paris")
    night = datetime(2026, 6, 10, 21, 30, tzinfo=UTC)  # 23:30 in Paris
    choice = choose(paris, at=night)
    assert choice.channel == Channel.IN_APP
    assert "push would wait for quiet hours until 2026-06-11 08:00 Europe/Paris (2026-06-11 06:00 UTC)" in (
        choice.reason
    )


def test_push_at_its_live_cap_goes_to_a_channel_that_can_go_now():
    r = ReachableRecipientFactory()
    # The default "1 engagement/promotional push per 4 h" is spent an hour ago.
    MessageFactory(
        recipient=r,
        channel=Channel.PUSH,
        created_at=NOON - timedelta(hours=1),
        accepted_at=NOON - timedelta(hours=1),
    )
    choice = choose(r)
    assert choice.channel == Channel.IN_APP
    assert "push would wait for the cap “Push engagement/promotional, 4 h” until 15:00 UTC" in choice.reason


def test_when_every_channel_would_wait_the_best_one_that_still_can_go_waits():
    r = ReachableRecipientFactory(timezone="Europe/Paris")
    for n in range(3):  # the 3-a-day cross-channel cap is spent
        at = NOON - timedelta(hours=5 - n)
        MessageFactory(recipient=r, channel=Channel.EMAIL, created_at=at, accepted_at=at)
    choice = choose(r)
    assert choice.channel == Channel.IN_APP
    assert choice.reason.startswith(
        "in-app would wait for the cap “Engagement + promotional, 24 h” until 2026-06-11 09:00 Europe/Paris"
    )
    assert "(no channel can go now)" in choice.reason
    # A push that waits 19 hours is past its 4-hour shelf life: not a candidate at all.
    assert "push would expire before it could go" in choice.reason


def test_an_auto_send_records_the_choice_and_its_reason_on_the_message():
    r = ReachableRecipientFactory()
    message = message_send(recipient=r, channel="auto", purpose=Purpose.ENGAGEMENT, content=SHORT, at=NOON)
    assert message.requested_channel == "auto" and message.channel == Channel.PUSH
    assert message.channel_reason.startswith("push can go now")
    sms_only = ContactPointFactory(channel=Channel.SMS, address="+14155550123").recipient
    with pytest.raises(SendRefused) as refused:
        message_send(recipient=sms_only, channel="auto", purpose=Purpose.PROMOTIONAL, content=SHORT, at=NOON)
    assert refused.value.errors["channel"][0]["code"] == "no_channel"


def test_the_bulk_variant_decides_like_the_single_one_in_a_fixed_number_of_queries(
    django_assert_max_num_queries, django_assert_num_queries
):
    a, b, c = ReachableRecipientFactory(), ReachableRecipientFactory(), ReachableRecipientFactory()
    PreferenceFactory(recipient=b, channel=Channel.PUSH, purpose=Purpose.ENGAGEMENT, opted_in=False)
    for _ in range(4):
        MessageFactory(
            recipient=c,
            channel=Channel.IN_APP,
            status=MessageStatus.OPENED,
            created_at=NOON - timedelta(days=2),
        )
    cases = ((a, ()), (b, ()), (c, ()), (a, {Channel.PUSH}))
    requests = [
        ChoiceRequest(r.pk, Purpose.ENGAGEMENT, SHORT, frozenset(ALL), frozenset(avoid)) for r, avoid in cases
    ]
    channels_choose_bulk(requests=requests, at=NOON)  # the policy caches are warm from here on
    with django_assert_max_num_queries(8) as small:
        bulk = channels_choose_bulk(requests=requests, at=NOON)
    many = [
        ChoiceRequest(r.pk, Purpose.ENGAGEMENT, SHORT, frozenset(ALL))
        for r in ReachableRecipientFactory.create_batch(30)
    ]
    with django_assert_num_queries(len(small.captured_queries)):
        channels_choose_bulk(requests=many, at=NOON)
    single = [choose(r, avoid=frozenset(avoid)) for r, avoid in cases]
    assert bulk == single
    assert [x.channel for x in bulk][:3] == [Channel.PUSH, Channel.IN_APP, Channel.IN_APP]
    assert bulk[3].channel != Channel.PUSH
