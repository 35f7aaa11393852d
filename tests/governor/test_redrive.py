"""Deferral and the re-drive: arbitration order, expiry, pauses and resume, status-change signals."""

from datetime import timedelta

import pytest

from governor.models import PauseMode
from governor.services import channel_pause, channel_resume, deferred_redrive
from orchestrator import work
from orchestrator.models import Message, MessageStatus
from orchestrator.signals import message_status_changed
from tests.orchestrator.factories import MessageFactory, RecipientFactory

from .factories import CapRuleFactory
from .helpers import AT, decide, sent

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)


@pytest.fixture
def transitions():
    seen = []

    def receiver(sender, message, previous, **kwargs):
        if previous:  # a move, not a new message
            seen.append((message.pk, previous, message.status))

    message_status_changed.connect(receiver, dispatch_uid="test-transitions")
    yield seen
    message_status_changed.disconnect(dispatch_uid="test-transitions")


def waiting(recipient, *, priority, created_at, deliver_after, expires_at=None, channel="email"):
    """A message deferred earlier, waiting for a slot."""
    return MessageFactory(
        recipient=recipient,
        channel=channel,
        priority=priority,
        status=MessageStatus.DEFERRED,
        created_at=created_at,
        decided_at=created_at,
        deferred_at=created_at,
        accepted_at=None,
        deliver_after=deliver_after,
        expires_at=expires_at,
    )


def test_the_redrive_is_registered_as_due_work(settings):
    assert "governor.redrive.deferred_redrive" in settings.ORCHESTRATOR["DUE_WORK"]


def test_a_deferred_message_is_accepted_when_its_slot_frees(no_governor, transitions):
    CapRuleFactory(limit=1, window=4 * H)
    r = RecipientFactory()
    sent(r, AT - 3 * H)
    m = decide(r)
    assert m.status == MessageStatus.DEFERRED and m.deliver_after == AT + H
    assert transitions == []  # creation is not a transition
    assert deferred_redrive(now=AT + H - timedelta(seconds=1), limit=100) == 0
    assert deferred_redrive(now=AT + H, limit=100) == 1
    m.refresh_from_db()
    assert m.status == MessageStatus.ACCEPTED and m.accepted_at == AT + H
    assert transitions == [(m.pk, MessageStatus.DEFERRED, MessageStatus.ACCEPTED)]


def test_several_waiting_go_by_priority_then_age(no_governor, transitions):
    CapRuleFactory(limit=1, window=4 * H)
    r = RecipientFactory()
    sent(r, AT - 4 * H)  # the slot is free at AT
    low = waiting(r, priority=10, created_at=AT - 3 * H, deliver_after=AT)
    old = waiting(r, priority=50, created_at=AT - 2 * H, deliver_after=AT)
    young = waiting(r, priority=50, created_at=AT - 1 * H, deliver_after=AT)
    high = waiting(r, priority=90, created_at=AT - 30 * timedelta(minutes=1), deliver_after=AT)
    order = []
    now = AT
    for _ in range(4):
        deferred_redrive(now=now, limit=100)
        winners = Message.objects.filter(
            pk__in=[low.pk, old.pk, young.pk, high.pk], status=MessageStatus.ACCEPTED
        ).exclude(pk__in=order)
        order += [w.pk for w in winners]
        now += 4 * H
    assert order == [high.pk, old.pk, young.pk, low.pk]
    young.refresh_from_db()
    assert young.status == MessageStatus.ACCEPTED


def test_a_newcomer_does_not_take_the_slot_a_due_message_waits_for(no_governor):
    CapRuleFactory(limit=1, window=4 * H)
    r = RecipientFactory()
    sent(r, AT - 4 * H)
    waiting(r, priority=50, created_at=AT - H, deliver_after=AT)
    same = decide(r, priority=50)
    assert same.status == MessageStatus.DEFERRED and "1 waiting ahead of it" in same.reason
    urgent = decide(r, priority=80)  # higher priority goes ahead of the waiting one
    assert urgent.status == MessageStatus.ACCEPTED


def test_a_waiting_message_past_its_expiry_expires_instead_of_going_late(no_governor, transitions):
    CapRuleFactory(limit=1, window=4 * H)
    r = RecipientFactory()
    m = waiting(r, priority=50, created_at=AT - 5 * H, deliver_after=AT, expires_at=AT - H)
    assert deferred_redrive(now=AT, limit=100) == 1
    m.refresh_from_db()
    assert m.status == MessageStatus.EXPIRED and m.expired_at == AT and m.accepted_at is None
    assert transitions == [(m.pk, MessageStatus.DEFERRED, MessageStatus.EXPIRED)]


def test_a_message_deferred_again_keeps_waiting_with_a_new_time(no_governor, transitions):
    CapRuleFactory(limit=1, window=4 * H)
    r = RecipientFactory()
    sent(r, AT - H)
    m = waiting(r, priority=50, created_at=AT - 2 * H, deliver_after=AT)
    deferred_redrive(now=AT, limit=100)
    m.refresh_from_db()
    assert m.status == MessageStatus.DEFERRED and m.deliver_after == AT + 3 * H
    assert transitions == []


def test_resume_releases_what_a_pause_held(no_governor, transitions):
    r = RecipientFactory()
    channel_pause(channel="push", mode=PauseMode.DEFER, at=AT)
    m = decide(r, channel="push")
    assert deferred_redrive(now=AT + H, limit=100) == 0  # held while paused
    m.refresh_from_db()
    assert m.status == MessageStatus.DEFERRED and m.deliver_after is None
    assert channel_resume(channel="push", at=AT + 2 * H) == 1
    work.due_work_run(now=AT + 2 * H)
    m.refresh_from_db()
    assert m.status == MessageStatus.ACCEPTED
    assert transitions == [(m.pk, MessageStatus.DEFERRED, MessageStatus.ACCEPTED)]


def test_a_message_held_by_a_pause_expires_while_the_channel_is_still_paused(no_governor, transitions):
    r = RecipientFactory()
    channel_pause(channel="push", mode=PauseMode.DEFER, at=AT)
    m = decide(r, channel="push", expires_at=AT + 2 * H)
    assert m.status == MessageStatus.DEFERRED and m.deliver_after is None
    assert deferred_redrive(now=AT + H, limit=100) == 0  # still fresh: held
    assert deferred_redrive(now=AT + 2 * H, limit=100) == 1  # past expires_at: expired, pause or not
    m.refresh_from_db()
    assert m.status == MessageStatus.EXPIRED and m.expired_at == AT + 2 * H
    assert transitions == [(m.pk, MessageStatus.DEFERRED, MessageStatus.EXPIRED)]


def test_a_suppressing_pause_suppresses_what_comes_due(no_governor, transitions):
    r = RecipientFactory()
    m = waiting(r, priority=50, created_at=AT - H, deliver_after=AT)
    channel_pause(channel="email", mode=PauseMode.SUPPRESS, at=AT)
    deferred_redrive(now=AT, limit=100)
    m.refresh_from_db()
    assert m.status == MessageStatus.SUPPRESSED and m.reason == "channel paused"


def test_the_redrive_takes_at_most_limit(no_governor):
    r = RecipientFactory()
    for i in range(5):
        waiting(r, priority=50, created_at=AT - i * H, deliver_after=AT)
    assert deferred_redrive(now=AT, limit=3) == 3
    assert deferred_redrive(now=AT, limit=3) == 2
    assert not Message.objects.filter(status=MessageStatus.DEFERRED).exists()


def test_a_message_held_by_a_stale_pause_is_released_by_the_next_pass(no_governor):
    """Another process may still see a pause for a few seconds after the resume: the pass heals it."""
    r = RecipientFactory()
    m = waiting(r, priority=50, created_at=AT - H, deliver_after=None)  # held, but no pause is active
    assert deferred_redrive(now=AT, limit=100) == 1
    m.refresh_from_db()
    assert m.status == MessageStatus.ACCEPTED


def test_a_held_message_keeps_the_callers_later_time(no_governor):
    r = RecipientFactory()
    channel_pause(channel="email", mode=PauseMode.DEFER, at=AT)
    m = decide(r, deliver_after=AT + 5 * H)
    assert m.status == MessageStatus.DEFERRED and m.deliver_after == AT + 5 * H
