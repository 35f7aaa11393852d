"""Two workers draining one campaign at once (real commits, each with its own clock reading): every member
is decided exactly once."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Count

from journeys.campaigns import campaign_create, campaign_transition, campaigns_advance
from journeys.models import Campaign, CampaignRecipient, CampaignStatus, MemberState
from orchestrator.models import Message, Segment, Source
from tests.orchestrator.factories import ContactPointFactory, RecipientFactory

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_kick(monkeypatch):
    """The workers here are the test's threads: approving must not also run the campaign's tasks (the test
    settings run tasks inline, at the real time, so they would send everything before a worker starts)."""
    from journeys import campaigns

    monkeypatch.setattr(campaigns, "_kick", lambda tasks=None: None)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_workers_decide_each_member_exactly_once():
    for n in range(40):
        ContactPointFactory(recipient=RecipientFactory(external_id=f"w{n}", timezone="UTC"))
    segment = Segment.objects.create(name="All", conditions=[])
    campaign = campaign_create(
        data={
            "name": "Race",
            "segment": segment.pk,
            "channel": "email",
            "purpose": "transactional",
            "content": {"subject": "Receipt", "body": "Thanks."},
        },
        now=START,
    )
    for action in ("propose", "approve"):
        campaign = campaign_transition(campaign=campaign, action=action, now=START)

    errors, barrier, handled = [], threading.Barrier(2), []

    def worker(offset_ms: int) -> None:
        try:
            barrier.wait()
            n = 0
            for round_ in range(6):
                work = campaigns_advance(
                    now=START + timedelta(milliseconds=offset_ms + 7 * round_), batch_size=5
                )
                n += work.decided
            handled.append(n)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(ms,)) for ms in (1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(handled) == 40, handled  # between them, each member once (who sent what is up to timing)
    campaigns_advance(now=START + timedelta(seconds=5))
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    assert CampaignRecipient.objects.filter(campaign=campaign, state=MemberState.DECIDED).count() == 40
    messages = Message.objects.filter(source=Source.CAMPAIGN)
    assert messages.count() == 40 and messages.values("recipient").distinct().count() == 40


def _launched_to(n: int, *, prefix: str) -> Campaign:
    for i in range(n):
        ContactPointFactory(recipient=RecipientFactory(external_id=f"{prefix}{i}", timezone="UTC"))
    segment = Segment.objects.create(name=f"All {prefix}", conditions=[])
    campaign = campaign_create(
        data={
            "name": f"Shared {prefix}",
            "segment": segment.pk,
            "channel": "email",
            "purpose": "transactional",
            "content": {"subject": "Receipt", "body": "Thanks."},
        },
        now=START,
    )
    for action in ("propose", "approve"):
        campaign = campaign_transition(campaign=campaign, action=action, now=START)
    return campaign


def _held_first_batch(monkeypatch):
    """Make the first batch sent (in whichever thread) wait inside its transaction, its members claimed
    and its messages written, until `release` is set. Returns (holding, release)."""
    from journeys import campaigns

    holding, release = threading.Event(), threading.Event()
    real = campaigns._batch_send
    first = threading.Lock()

    def batch_send(campaign, members, now):
        result = real(campaign, members, now)
        if first.acquire(blocking=False):
            holding.set()
            assert release.wait(30), "the held batch was never released"
        return result

    monkeypatch.setattr(campaigns, "_batch_send", batch_send)
    return holding, release


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_second_worker_sends_other_batches_while_the_first_holds_one(monkeypatch):
    """The workers share a campaign batch by batch: while one worker's batch is still open (its members
    locked, not yet committed), another sends every other member; neither waits for the campaign row."""
    campaign = _launched_to(30, prefix="p")
    holding, release = _held_first_batch(monkeypatch)
    errors: list[Exception] = []

    def first_worker() -> None:
        try:
            campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=first_worker)
    holder.start()
    try:
        assert holding.wait(30), errors
        # The second worker runs to the end while the first batch is held: 25 members, 5 batches.
        work = campaigns_advance(now=START + timedelta(milliseconds=3), batch_size=5)
        assert (work.decided, work.batches) == (25, 5)
        assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.SENDING  # 5 still in flight
    finally:
        release.set()
        holder.join(60)
    assert not errors, errors
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE  # settled by the first worker
    assert CampaignRecipient.objects.filter(campaign=campaign, state=MemberState.DECIDED).count() == 30
    messages = Message.objects.filter(source=Source.CAMPAIGN)
    assert messages.count() == 30 and messages.values("recipient").distinct().count() == 30


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_cancel_waits_for_the_batch_in_flight_and_stops_everything_after_it(monkeypatch):
    """A cancel during a batch: the batch is sent whole (its members decided, their messages kept), every
    member not in it is cancelled, and no worker sends anything after the cancel."""
    campaign = _launched_to(20, prefix="c")
    holding, release = _held_first_batch(monkeypatch)
    errors: list[Exception] = []

    def worker(offset_ms: int) -> None:
        try:
            campaigns_advance(now=START + timedelta(milliseconds=offset_ms), batch_size=5)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def cancel() -> None:
        try:
            campaign_transition(campaign=campaign, action="cancel", now=START + timedelta(milliseconds=5))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=worker, args=(1,))
    holder.start()
    assert holding.wait(30), errors
    canceller = threading.Thread(target=cancel)
    canceller.start()
    canceller.join(1.0)
    assert canceller.is_alive(), "the cancel must wait for the batch in flight"
    release.set()
    holder.join(60)
    canceller.join(60)
    assert not errors, errors
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
