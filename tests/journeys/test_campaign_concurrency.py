"""Two workers draining one campaign at once (real commits, each with its own clock reading): every member
is decided exactly once; a worker never waits for another's batch; a cancel waits only for it."""

import threading
from datetime import timedelta

import pytest
from django.db.models import Count

from journeys.campaigns import campaign_transition, campaigns_advance
from journeys.models import Campaign, CampaignRecipient, CampaignStatus, MemberState
from orchestrator.models import Message, Source
from tests.journeys.campaign_workers import START, Worker, hold_first, launched, no_kick, people  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_kick")]


def test_two_workers_decide_each_member_exactly_once():
    people(40, "w")
    campaign = launched("w")
    barrier = threading.Barrier(2)

    def drain(offset_ms: int) -> int:
        barrier.wait()
        decided = 0
        for round_ in range(6):
            at = START + timedelta(milliseconds=offset_ms + 7 * round_)
            decided += campaigns_advance(now=at, batch_size=5).decided
        return decided

    workers = [Worker(lambda ms=ms: drain(ms)) for ms in (1, 3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.error for w in workers] == [None, None]
    # Between them, each member once (who sent what is up to timing).
    assert sum(w.result for w in workers) == 40
    campaigns_advance(now=START + timedelta(seconds=5))
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    assert CampaignRecipient.objects.filter(campaign=campaign, state=MemberState.DECIDED).count() == 40
    messages = Message.objects.filter(source=Source.CAMPAIGN)
    assert messages.count() == 40 and messages.values("recipient").distinct().count() == 40


def test_a_second_worker_sends_other_batches_while_the_first_holds_one(monkeypatch):
    """The workers share a campaign batch by batch: while one worker's batch is still open (its members
    locked, not yet committed), another sends every other member; neither waits for the campaign row."""
    people(30, "p")
    campaign = launched("p")
    holding, release = hold_first(monkeypatch)
    holder = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5))
    holder.start()
    try:
        assert holding.wait(30), holder.error
        # The second worker runs to the end while the first batch is held: 25 members, 5 batches.
        work = campaigns_advance(now=START + timedelta(milliseconds=3), batch_size=5)
        assert (work.decided, work.batches) == (25, 5)
        assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.SENDING  # 5 still in flight
    finally:
        release.set()
        holder.join(60)
    assert holder.error is None, holder.error
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE  # settled by the first worker
    assert CampaignRecipient.objects.filter(campaign=campaign, state=MemberState.DECIDED).count() == 30
    messages = Message.objects.filter(source=Source.CAMPAIGN)
    assert messages.count() == 30 and messages.values("recipient").distinct().count() == 30


def test_a_cancel_waits_for_the_batch_in_flight_and_stops_everything_after_it(monkeypatch):
    """A cancel during a batch: the batch is sent whole (its members decided, their messages kept), every
    member not in it is cancelled, and no worker sends anything after the cancel."""
    people(20, "c")
    campaign = launched("c")
    holding, release = hold_first(monkeypatch)
    holder = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5))
    holder.start()
    assert holding.wait(30), holder.error
    canceller = Worker(
        lambda: campaign_transition(campaign=campaign, action="cancel", now=START + timedelta(milliseconds=5))
    )
    canceller.start()
    canceller.join(1.0)
    assert canceller.is_alive(), "the cancel must wait for the batch in flight"
    release.set()
    holder.join(60)
    canceller.join(60)
    assert (holder.error, canceller.error) == (None, None)
    campaigns_advance(now=START + timedelta(seconds=5), batch_size=5)  # a worker after the cancel
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.CANCELLED
    states = dict(
        CampaignRecipient.objects.filter(campaign=campaign)
        .values_list("state")
        .annotate(n=Count("id"))
        .order_by()
    )
    # The held batch (5), perhaps batches the holder sent after it before the cancel got in, all whole.
    decided = states.get(MemberState.DECIDED, 0)
    assert decided % 5 == 0 and decided >= 5
    assert states.get(MemberState.CANCELLED, 0) == 20 - decided
    assert Message.objects.filter(source=Source.CAMPAIGN).count() == decided
