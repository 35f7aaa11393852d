"""The decision: caps (AND, window edges, exemptions), quiet hours, preferences, pauses, expiry."""

from datetime import UTC, datetime, time, timedelta

import pytest

from governor.models import PauseMode
from governor.services import channel_pause, governor_check
from orchestrator.models import Message, MessageStatus
from tests.orchestrator.factories import PreferenceFactory, RecipientFactory

from .factories import CapRuleFactory, QuietHoursFactory
from .helpers import AT, decide, sent

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)


def test_under_every_cap_is_accepted_with_the_counts(default_governor):
    r = RecipientFactory()
    sent(r, AT - 2 * H)
    m = decide(r)
    assert m.status == MessageStatus.ACCEPTED and m.accepted_at == AT and m.decided_at == AT
    assert m.rule == ""
    assert "2 of 3 engagement+promotional messages in the last 24 h across all channels" in m.reason


def test_the_fourth_message_in_24h_across_channels_is_deferred_to_the_next_slot(default_governor):
    r = RecipientFactory()
    sent(r, AT - 20 * H, channel="email")
    sent(r, AT - 10 * H, channel="in_app", purpose="promotional")
    sent(r, AT - 1 * H, channel="email")
    m = decide(r, channel="email")
    assert m.status == MessageStatus.DEFERRED and m.deferred_at == AT
    assert m.deliver_after == AT + 4 * H  # the oldest leaves the window 24 h after it cleared
    assert m.rule == "Engagement + promotional, 24 h"
    assert m.reason == (
        "3 of 3 engagement+promotional messages in the last 24 h across all channels; next slot at 16:00 UTC"
    )
    assert m.accepted_at is None


def test_window_edge_a_message_exactly_one_window_ago_no_longer_counts(no_governor):
    """The window is (at - window, at]: exactly 24 h ago is out, a microsecond later is in."""
    CapRuleFactory(limit=1, window=24 * H)
    out, inside = RecipientFactory(), RecipientFactory()
    sent(out, AT - 24 * H)
    sent(inside, AT - 24 * H + timedelta(microseconds=1))
    assert decide(out).status == MessageStatus.ACCEPTED
    m = decide(inside)
    assert m.status == MessageStatus.DEFERRED
    assert m.deliver_after == AT + timedelta(microseconds=1)


def test_a_message_cleared_at_the_decision_time_counts(no_governor):
    CapRuleFactory(limit=1, window=H)
    r = RecipientFactory()
    sent(r, AT)
    assert decide(r).status == MessageStatus.DEFERRED


def test_transactional_and_alert_are_never_capped_but_recorded(default_governor):
    r = RecipientFactory()
    for i in range(6):
        sent(r, AT - i * H, channel="push")
    for purpose in ("transactional", "alert"):
        m = decide(r, channel="push", purpose=purpose)
        assert m.status == MessageStatus.ACCEPTED and m.pk
        assert "No cap applies" in m.reason


def test_rules_apply_together_and_the_most_restrictive_decides(default_governor):
    r = RecipientFactory()
    sent(r, AT - 3 * H, channel="push")  # push rule: next push at AT + 1 h
    # 24 h rule still has room, but the push rule blocks a second push within 4 h.
    push = decide(r, channel="push")
    assert push.status == MessageStatus.DEFERRED and push.rule == "Push engagement/promotional, 4 h"
    assert push.deliver_after == AT + H
    assert "1 of 1 engagement+promotional messages in the last 4 h on push" in push.reason
    # Email is not covered by the push rule.
    assert decide(r, channel="email").status == MessageStatus.ACCEPTED
    # Now both rules block a push: the later slot wins.
    sent(r, AT - 23 * H, channel="email")
    both = decide(r, channel="push")
    assert both.status == MessageStatus.DEFERRED
    assert both.deliver_after == AT + H  # 24 h rule frees at AT + 1 h too; tie on time
    sent(r, AT - 30 * H, channel="email")  # outside every window: changes nothing
    r2 = RecipientFactory()
    sent(r2, AT - 3 * H, channel="push")
    sent(r2, AT - 2 * H, channel="email")
    sent(r2, AT - 1 * H, channel="email")
    later = decide(r2, channel="push")
    assert later.rule == "Engagement + promotional, 24 h" and later.deliver_after == AT + 21 * H


def test_over_cap_by_more_than_one_waits_for_enough_to_leave(no_governor):
    CapRuleFactory(limit=2, window=10 * H)
    r = RecipientFactory()
    for hours_ago in (9, 8, 7, 1):
        sent(r, AT - hours_ago * H)
    m = decide(r)
    # 4 in the window, limit 2: three must leave, the third oldest (7 h ago) frees the slot.
    assert m.deliver_after == AT + 3 * H


def test_a_rule_limited_to_some_channels_counts_only_those(no_governor):
    CapRuleFactory(limit=1, window=4 * H, channels=["push"])
    r = RecipientFactory()
    sent(r, AT - H, channel="email")
    assert decide(r, channel="push").status == MessageStatus.ACCEPTED


def test_disabled_rules_do_not_apply(no_governor):
    CapRuleFactory(limit=1, enabled=False)
    r = RecipientFactory()
    sent(r, AT - H)
    assert decide(r).status == MessageStatus.ACCEPTED


# ---- quiet hours -----------------------------------------------------------------------------------


def paris(y, mo, d, h, mi=0):
    from zoneinfo import ZoneInfo

    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo("Europe/Paris"))


@pytest.mark.parametrize(
    "local,expected_local",
    [
        (paris(2026, 6, 10, 22, 30), paris(2026, 6, 11, 8)),  # evening: to tomorrow 08:00
        (paris(2026, 6, 11, 0, 15), paris(2026, 6, 11, 8)),  # after midnight: to this morning
        (paris(2026, 6, 11, 7, 59), paris(2026, 6, 11, 8)),
        (paris(2026, 6, 10, 21, 0), paris(2026, 6, 11, 8)),  # the start is inside
    ],
)
def test_quiet_hours_across_midnight_defer_to_the_local_end(no_governor, local, expected_local):
    QuietHoursFactory()
    r = RecipientFactory(timezone="Europe/Paris")
    m = decide(r, channel="push", at=local.astimezone(UTC))
    assert m.status == MessageStatus.DEFERRED
    assert m.deliver_after == expected_local.astimezone(UTC)
    assert m.rule.startswith("quiet") and "21:00–08:00 in Europe/Paris; deferred to 08:00 local" in m.reason


@pytest.mark.parametrize("local", [paris(2026, 6, 11, 8, 0), paris(2026, 6, 10, 20, 59)])
def test_outside_quiet_hours_is_accepted(no_governor, local):
    QuietHoursFactory()
    r = RecipientFactory(timezone="Europe/Paris")
    assert decide(r, channel="push", at=local.astimezone(UTC)).status == MessageStatus.ACCEPTED


def test_quiet_hours_spare_other_channels_and_exempt_purposes(no_governor):
    QuietHoursFactory()
    r = RecipientFactory(timezone="Europe/Paris")
    night = paris(2026, 6, 10, 23).astimezone(UTC)
    assert decide(r, channel="email", at=night).status == MessageStatus.ACCEPTED
    assert decide(r, channel="push", purpose="transactional", at=night).status == MessageStatus.ACCEPTED
    assert decide(r, channel="sms", purpose="alert", at=night).status == MessageStatus.ACCEPTED
    assert decide(r, channel="sms", purpose="engagement", at=night).status == MessageStatus.DEFERRED


def test_quiet_hours_within_one_day(no_governor):
    QuietHoursFactory(start=time(12, 0), end=time(14, 0), channels=[])
    r = RecipientFactory(timezone="UTC")
    m = decide(r, at=AT + timedelta(minutes=30))
    assert m.deliver_after == AT + 2 * H


@pytest.mark.parametrize(
    "at,expected",
    [
        # New York springs forward on 2026-03-08 at 02:00: 22:00 EST the night before is 03:00 UTC;
        # 08:00 the next morning is EDT (UTC-4), so 12:00 UTC, not 13:00.
        (datetime(2026, 3, 8, 3, 0, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # It falls back on 2026-11-01 at 02:00: 22:00 EDT is 02:00 UTC; 08:00 EST is 13:00 UTC.
        (datetime(2026, 11, 1, 2, 0, tzinfo=UTC), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        # 01:30 during the repeated hour (second pass, EST) is still quiet: 08:00 EST.
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
    ],
)
def test_quiet_hours_across_a_dst_change_end_at_local_eight(no_governor, at, expected):
    QuietHoursFactory()
    r = RecipientFactory(timezone="America/New_York")
    m = decide(r, channel="push", at=at)
    assert m.status == MessageStatus.DEFERRED and m.deliver_after == expected


def test_a_cap_slot_inside_quiet_hours_waits_for_their_end(default_governor):
    r = RecipientFactory(timezone="UTC")
    evening = datetime(2026, 6, 10, 20, 0, tzinfo=UTC)
    sent(r, evening - 3 * H, channel="push")  # push slot frees at 21:00: quiet until 08:00
    m = decide(r, channel="push", at=evening)
    assert m.status == MessageStatus.DEFERRED
    assert m.deliver_after == datetime(2026, 6, 11, 8, 0, tzinfo=UTC)
    assert m.rule == "Push engagement/promotional, 4 h" and "then quiet hours" in m.reason


# ---- expiry, preferences, pauses, caller's hold ---------------------------------------------------


def test_a_message_that_cannot_pass_before_it_expires_is_expired(default_governor):
    r = RecipientFactory()
    for i in (1, 2, 3):
        sent(r, AT - i * H)
    m = decide(r, expires_at=AT + 2 * H)
    assert m.status == MessageStatus.EXPIRED and m.expired_at == AT
    assert (
        "it expires at 14:00 UTC first, so it will not be sent" in m.reason
        and m.rule == "Engagement + promotional, 24 h"
    )
    ok = decide(r, expires_at=AT + 23 * H)
    assert ok.status == MessageStatus.DEFERRED


def test_an_opt_out_suppresses_with_a_reason(default_governor):
    r = RecipientFactory()
    PreferenceFactory(recipient=r, channel="email", purpose="promotional", opted_in=False)
    m = decide(r, purpose="promotional")
    assert m.status == MessageStatus.SUPPRESSED and m.suppressed_at == AT and m.rule == "preferences"
    assert "opted out of promotional messages on email" in m.reason
    assert decide(r, purpose="engagement").status == MessageStatus.ACCEPTED
    assert decide(r, channel="push", purpose="promotional").status == MessageStatus.ACCEPTED


def test_a_paused_channel_defers_or_suppresses(default_governor):
    r = RecipientFactory()
    channel_pause(channel="push", mode=PauseMode.DEFER, at=AT)
    held = decide(r, channel="push", purpose="transactional")
    assert held.status == MessageStatus.DEFERRED and held.deliver_after is None
    assert held.reason.startswith("channel paused")
    channel_pause(channel="sms", mode=PauseMode.SUPPRESS, at=AT)
    dropped = decide(r, channel="sms", purpose="alert")
    assert dropped.status == MessageStatus.SUPPRESSED and dropped.reason == "channel paused"
    assert decide(r, channel="email").status == MessageStatus.ACCEPTED


def test_a_callers_deliver_after_in_the_future_holds_until_then(default_governor):
    r = RecipientFactory()
    m = decide(r, deliver_after=AT + 2 * H)
    assert m.status == MessageStatus.DEFERRED and m.deliver_after == AT + 2 * H
    assert decide(r, deliver_after=AT - H).status == MessageStatus.ACCEPTED


def test_the_dry_run_decides_the_same_and_writes_nothing(default_governor):
    r = RecipientFactory()
    for i in (1, 2, 3):
        sent(r, AT - i * H)
    before = Message.objects.count()
    check = governor_check(recipient=r, channel="email", purpose="engagement", at=AT)
    assert Message.objects.count() == before
    real = decide(r)
    assert (check.status, check.rule, check.reason, check.deliver_after) == (
        real.status,
        real.rule,
        real.reason,
        real.deliver_after,
    )


def test_database_errors_surface_as_django_errors(default_governor):
    from django.db import IntegrityError

    r = RecipientFactory()
    with pytest.raises(IntegrityError):
        decide(r, channel="fax")  # the message_channel_valid constraint
    assert not Message.objects.filter(recipient=r).exists()
