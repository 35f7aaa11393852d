"""Next best channel for `auto`: job fit, opt-outs, engagement, journey history and today's load."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestrator.channel_choice import channel_choose
from orchestrator.models import Channel, MessageStatus, Purpose
from orchestrator.pipeline import SendRefused, message_send
from tests.orchestrator.factories import (
    ContactPointFactory,
    MessageFactory,
    PreferenceFactory,
    ReachableRecipientFactory,
)

pytestmark = pytest.mark.django_db

SHORT = {"title": "Back in stock", "body": "The shoes you liked are back.", "action_url": "app://p/1"}
ALL = {Channel.EMAIL, Channel.PUSH, Channel.IN_APP, Channel.SMS}


def choose(recipient, purpose=Purpose.ENGAGEMENT, content=SHORT, reachable=ALL, avoid=frozenset()):
    return channel_choose(
        recipient=recipient,
        purpose=purpose,
        content=content,
        reachable=set(reachable),
        avoid=avoid,
        at=timezone.now(),
    )


def test_a_short_urgent_engagement_message_goes_to_push_with_a_reason():
    choice = choose(ReachableRecipientFactory())
    assert choice.channel == Channel.PUSH
    assert "push fits engagement best" in choice.reason


def test_sms_never_carries_engagement_but_may_carry_an_alert():
    r = ReachableRecipientFactory()
    assert choose(r, reachable={Channel.SMS}) is None
    assert choose(r, purpose=Purpose.ALERT, reachable={Channel.SMS}).channel == Channel.SMS


def test_an_opt_out_removes_the_channel():
    r = ReachableRecipientFactory()
    PreferenceFactory(recipient=r, channel=Channel.PUSH, purpose=Purpose.ENGAGEMENT, opted_in=False)
    choice = choose(r)
    assert choice.channel != Channel.PUSH and "opted out of push" in choice.reason


def test_long_content_goes_to_email():
    content = {"subject": "Everything about your order", "body": "Details. " * 80}
    assert choose(ReachableRecipientFactory(), content=content).channel == Channel.EMAIL


def test_recent_engagement_tips_the_choice():
    r = ReachableRecipientFactory()
    for _ in range(4):
        MessageFactory(
            recipient=r,
            channel=Channel.IN_APP,
            status=MessageStatus.OPENED,
            created_at=timezone.now() - timedelta(days=3),
        )
    choice = choose(r)
    assert choice.channel == Channel.IN_APP and "opened or clicked 4 recent messages there" in choice.reason


def test_a_channel_used_in_this_journey_or_busy_today_is_avoided():
    r = ReachableRecipientFactory()
    choice = choose(r, avoid=frozenset({Channel.PUSH}))
    assert choice.channel != Channel.PUSH and "already used in this journey" in choice.reason
    for _ in range(2):
        MessageFactory(recipient=r, channel=Channel.PUSH, created_at=timezone.now() - timedelta(hours=1))
    choice = choose(r)
    assert choice.channel != Channel.PUSH and "already 2 push messages today" in choice.reason


def test_an_auto_send_records_the_choice_and_its_reason_on_the_message():
    r = ReachableRecipientFactory()
    message = message_send(recipient=r, channel="auto", purpose=Purpose.ENGAGEMENT, content=SHORT)
    assert message.requested_channel == "auto" and message.channel == Channel.PUSH
    assert message.channel_reason.startswith("push fits engagement best")
    sms_only = ContactPointFactory(channel=Channel.SMS, address="+14155550123").recipient
    with pytest.raises(SendRefused) as refused:
        message_send(recipient=sms_only, channel="auto", purpose=Purpose.PROMOTIONAL, content=SHORT)
    assert refused.value.errors["channel"][0]["code"] == "no_channel"


def test_the_bulk_variant_decides_like_the_single_one_in_two_queries(django_assert_max_num_queries):
    from orchestrator.channel_choice import ChoiceRequest, channels_choose_bulk

    a, b, c = ReachableRecipientFactory(), ReachableRecipientFactory(), ReachableRecipientFactory()
    PreferenceFactory(recipient=b, channel=Channel.PUSH, purpose=Purpose.ENGAGEMENT, opted_in=False)
    for _ in range(4):
        MessageFactory(
            recipient=c,
            channel=Channel.IN_APP,
            status=MessageStatus.OPENED,
            created_at=timezone.now() - timedelta(days=2),
        )
    requests = [
        ChoiceRequest(r.pk, Purpose.ENGAGEMENT, SHORT, frozenset(ALL), frozenset(avoid))
        for r, avoid in ((a, ()), (b, ()), (c, ()), (a, {Channel.PUSH}))
    ]
    with django_assert_max_num_queries(2):
        bulk = channels_choose_bulk(requests=requests, at=timezone.now())
    single = [
        channel_choose(
            recipient=r,
            purpose=Purpose.ENGAGEMENT,
            content=SHORT,
            reachable=set(ALL),
            avoid=frozenset(avoid),
            at=timezone.now(),
        )
        for r, avoid in ((a, ()), (b, ()), (c, ()), (a, {Channel.PUSH}))
    ]
    assert bulk == single
    assert [x.channel for x in bulk][:3] == [Channel.PUSH, Channel.IN_APP, Channel.IN_APP]
    assert bulk[3].channel != Channel.PUSH
