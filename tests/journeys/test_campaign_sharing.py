"""Several workers sharing one campaign batch by batch (real commits, each thread its own connection and its
own clock reading): local-time waves, a batch that fails, a template changed mid-way, a throttle, an
erasure, the `more` flag, a cancel racing the settle step."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from journeys import campaigns
from journeys.campaigns import campaign_transition, campaigns_advance
from journeys.models import Campaign, CampaignRecipient, CampaignStatus, MemberState
from orchestrator.models import Message, Source
from tests.journeys.campaign_workers import MAIL, START, Worker, hold_first, launched, no_kick, people  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_kick")]


def _states(campaign) -> dict[str, int]:
    out: dict[str, int] = {}
    for state in CampaignRecipient.objects.filter(campaign=campaign).values_list("state", flat=True):
        out[state] = out.get(state, 0) + 1
    return out


def _sent_once(n: int) -> None:
    messages = Message.objects.filter(source=Source.CAMPAIGN)
    assert messages.count() == n and messages.values("recipient").distinct().count() == n


# ---- 1. local time: waves due at different moments, three workers ----------------------------------------


def test_three_workers_send_each_local_time_wave_at_its_moment_and_finish(monkeypatch):
    people(6, "tk", "Asia/Tokyo")  # 10:00 on 3 March = 01:00 UTC
    people(6, "ln", "UTC")  # 10:00 UTC
    people(6, "ny", "America/New_York")  # 15:00 UTC
    campaign = launched("lt", schedule={"local_time": "10:00", "date": "2026-03-03"})
    campaigns_advance(now=START)  # writes the audience: nobody due yet
    tokyo = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    london, new_york = tokyo.replace(hour=10), tokyo.replace(hour=15)
    assert Campaign.objects.get(pk=campaign.pk).next_run_at == tokyo

    def wave(at: datetime) -> list[Worker]:
        # Three workers, each with its own clock a few ms apart; a batch of 2.
        workers = [
            Worker(lambda ms=ms: campaigns_advance(now=at + timedelta(milliseconds=ms), batch_size=2))
            for ms in (1, 2, 3)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert not [w.error for w in workers if w.error], [w.error for w in workers]
        return workers

    # A minute before each wave: nothing.
    wave(tokyo - timedelta(minutes=1))
    assert not Message.objects.exists()
    # The Tokyo wave, its first batch held: the other workers leave the campaign to the holder and write
    # no "waiting" over it; the holder settles it waiting for London once its batch is in.
    holding, release = hold_first(monkeypatch)
    holder = Worker(lambda: campaigns_advance(now=tokyo + timedelta(milliseconds=1), batch_size=2))
    holder.start()
    assert holding.wait(30)
    others = wave(tokyo + timedelta(milliseconds=2))
    assert sum(w.result.decided for w in others) == 4
    during = Campaign.objects.get(pk=campaign.pk)
    assert during.status == CampaignStatus.SENDING and during.next_run_at <= tokyo, during.note
    release.set()
    holder.join(60)
    assert holder.error is None, holder.error
    waiting = Campaign.objects.get(pk=campaign.pk)
    assert waiting.status == CampaignStatus.SENDING and waiting.next_run_at == london
    assert waiting.note == "Waiting: the next members are due at 2026-03-03 10:00 UTC."
    monkeypatch.undo()
    monkeypatch.setattr(campaigns, "_kick", lambda tasks=None: None)

    wave(london - timedelta(seconds=1))
    assert Message.objects.count() == 6
    wave(london)
    assert Message.objects.count() == 12
    assert Campaign.objects.get(pk=campaign.pk).next_run_at == new_york
    wave(new_york)
    done = Campaign.objects.get(pk=campaign.pk)
    assert done.status == CampaignStatus.DONE and done.note == "Every member was decided."
    _sent_once(18)
    for member in CampaignRecipient.objects.filter(campaign=campaign).select_related("message"):
        assert member.state == MemberState.DECIDED
        assert member.message.decided_at >= member.due_at  # never before its moment


def test_workers_with_different_clocks_leave_no_wave_behind():
    """One worker's clock already at the second wave, another's still at the first: each sends what is
    due by its own clock, the early one never sends the second wave early, and the campaign ends."""
    people(8, "a", "Asia/Tokyo")
    people(8, "b", "UTC")
    campaign = launched("clk", schedule={"local_time": "10:00", "date": "2026-03-03"})
    campaigns_advance(now=START)
    tokyo = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    london = tokyo.replace(hour=10)
    early = Worker(lambda: [campaigns_advance(now=tokyo, batch_size=2) for _ in range(3)])
    late = Worker(lambda: [campaigns_advance(now=london, batch_size=2) for _ in range(3)])
    for w in (early, late):
        w.start()
    for w in (early, late):
        w.join(60)
    assert early.error is None and late.error is None, (early.error, late.error)
    early_sent = Message.objects.filter(decided_at=tokyo)
    assert all(m.recipient.timezone == "Asia/Tokyo" for m in early_sent.select_related("recipient"))
    campaigns_advance(now=london + timedelta(minutes=1))
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    _sent_once(16)


# ---- 2. a batch that fails while another worker sends ---------------------------------------------------


def test_a_failed_batch_is_sent_later_not_lost(monkeypatch):
    people(20, "f")
    campaign = launched("fail")

    def boom():
        raise RuntimeError("provider table locked")

    holding, release = hold_first(monkeypatch, then=boom)
    failing = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5))
    failing.start()
    assert holding.wait(30)
    other = campaigns_advance(now=START + timedelta(milliseconds=2), batch_size=5)
    assert other.decided == 15
    release.set()
    failing.join(60)
    assert isinstance(failing.error, RuntimeError)
    after = Campaign.objects.get(pk=campaign.pk)
    assert after.status == CampaignStatus.SENDING and after.next_run_at <= START + timedelta(seconds=1)
    assert _states(campaign) == {MemberState.DECIDED: 15, MemberState.PENDING: 5}
    # The next pass (a successor task, the due-work pass) sends them.
    again = campaigns_advance(now=START + timedelta(minutes=1), batch_size=5)
    assert again.decided == 5
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    _sent_once(20)


# ---- 3. the template changed after approval --------------------------------------------------------------


def _template(key: str) -> None:
    from channels_app.services import template_create

    template_create(
        data={
            "key": key,
            "channel": "email",
            "purpose": "transactional",
            "default_locale": "en",
            "locales": {"en": {"subject": "Receipt v1", "body": "Thanks."}},
        }
    )


def _template_bump(key: str) -> None:
    from channels_app.models import MessageTemplate
    from channels_app.services import template_update

    template = MessageTemplate.objects.get(key=key)
    template_update(
        template=template, changes={"locales": {"en": {"subject": "Receipt v2", "body": "Thanks."}}}
    )


def test_a_template_change_mid_way_stops_new_batches_and_reapproval_sends_the_rest_once(monkeypatch):
    people(20, "t")
    _template("receipt")
    campaign = launched("tpl", content=None, template="receipt")
    holding, release = hold_first(monkeypatch)
    holder = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5))
    holder.start()
    assert holding.wait(30)
    _template_bump("receipt")
    # A batch that starts after the change sends nothing: the campaign goes back to proposed.
    second = campaigns_advance(now=START + timedelta(milliseconds=2), batch_size=5)
    assert second.decided == 0
    proposed = Campaign.objects.get(pk=campaign.pk)
    assert proposed.status == CampaignStatus.PROPOSED and "approve again" in proposed.note
    release.set()
    holder.join(60)
    assert holder.error is None, holder.error
    assert holder.result.decided == 5  # its batch began before the change; nothing after it
    assert Message.objects.count() == 5
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.PROPOSED
    campaign_transition(campaign=campaign, action="approve", now=START + timedelta(seconds=5))
    at = START + timedelta(seconds=6)
    workers = [
        Worker(lambda ms=ms: campaigns_advance(now=at + timedelta(milliseconds=ms), batch_size=5))
        for ms in (1, 2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not [w.error for w in workers if w.error]
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    _sent_once(20)
    assert Message.objects.filter(content__subject="Receipt v2").count() == 15


def test_a_stale_template_check_does_not_undo_a_reapproval(monkeypatch):
    """Worker C reads the campaign and sees the template changed; before it takes the row lock, worker D
    puts the campaign back to proposed and an operator approves the new revision. C must not then put the
    re-approved campaign back to proposed (its reading is older than the approval)."""
    people(6, "s")
    _template("stale")
    campaign = launched("stale", content=None, template="stale")
    _template_bump("stale")
    holding, release = hold_first(monkeypatch, "_campaign_locked", before=True)
    c = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5))
    c.start()
    assert holding.wait(30)
    campaigns_advance(now=START + timedelta(milliseconds=2), batch_size=5)  # D
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.PROPOSED
    campaign_transition(campaign=campaign, action="approve", now=START + timedelta(seconds=1))
    release.set()
    c.join(60)
    assert c.error is None, c.error
    after = Campaign.objects.get(pk=campaign.pk)
    assert after.status == CampaignStatus.SENDING, after.note
    campaigns_advance(now=START + timedelta(seconds=2), batch_size=5)
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    _sent_once(6)


# ---- 4. a throttle shared by two workers -----------------------------------------------------------------


def test_a_throttled_campaign_never_exceeds_its_rate_with_two_workers(monkeypatch):
    people(10, "r")
    campaign = launched("thr", throttle_per_minute=3)
    holding, release = hold_first(monkeypatch)
    first = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=2))
    first.start()
    assert holding.wait(30)
    # The holder has the row: the second worker passes over the campaign.
    assert campaigns_advance(now=START + timedelta(milliseconds=2), batch_size=2).decided == 0
    release.set()
    first.join(60)
    assert first.error is None and first.result.decided == 3

    windows = {}
    for minute in range(1, 6):
        at = START + timedelta(minutes=minute, seconds=1)
        workers = [
            Worker(lambda ms=ms, at=at: campaigns_advance(now=at + timedelta(milliseconds=ms), batch_size=2))
            for ms in (1, 2)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert not [w.error for w in workers if w.error]
        windows[minute] = sum(w.result.decided for w in workers)
    assert all(n <= 3 for n in windows.values()), windows
    assert sum(windows.values()) == 7
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    _sent_once(10)


# ---- 5. an erasure during the campaign -------------------------------------------------------------------


def test_an_erasure_during_a_batch_in_flight_waits_for_it_and_suppresses_what_it_sent(monkeypatch):
    """The batch holds its members' rows and takes the recipient's lock later (the governor); the erasure
    locks the person's members before the recipient's row, in the same order, so it waits for the batch
    instead of deadlocking with it (PostgreSQL failed the erasure or the batch). The batch's message for
    the person is then suppressed and scrubbed: nothing of them is left to send."""
    from orchestrator.erasure import recipient_erase
    from orchestrator.models import MessageStatus, Recipient

    people(10, "e")
    campaign = launched("er")
    gone = Recipient.objects.get(external_id="e1")  # in the first batch (by recipient id)
    # The first batch waits after its claim, before the pipeline: its members are locked.
    holding, release = hold_first(monkeypatch, before=True)
    holder = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5))
    holder.start()
    assert holding.wait(30)
    eraser = Worker(lambda: recipient_erase(recipient=gone, at=START + timedelta(milliseconds=2)))
    eraser.start()
    eraser.join(0.5)
    assert eraser.is_alive(), "the erasure waits for the batch that holds the person's member"
    release.set()
    holder.join(60)
    eraser.join(60)
    assert holder.error is None, holder.error
    assert eraser.error is None, eraser.error
    campaigns_advance(now=START + timedelta(seconds=5), batch_size=5)
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    (message,) = Message.objects.filter(recipient=gone)
    assert (message.status, message.rule, message.content, message.to_address) == (
        MessageStatus.SUPPRESSED,
        "erasure",
        {},
        "",
    )
    assert _states(campaign) == {MemberState.DECIDED: 10}


def test_an_erasure_between_batches_cancels_the_pending_member(monkeypatch):
    from orchestrator.erasure import recipient_erase
    from orchestrator.models import Recipient

    people(10, "g")
    campaign = launched("eg")
    gone = Recipient.objects.get(external_id="g8")  # in the second batch
    holding, release = hold_first(monkeypatch)
    holder = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5))
    holder.start()
    assert holding.wait(30)
    recipient_erase(recipient=gone, at=START + timedelta(milliseconds=2))
    release.set()
    holder.join(60)
    assert holder.error is None, holder.error
    assert not Message.objects.filter(recipient=gone).exists()
    assert CampaignRecipient.objects.get(campaign=campaign, recipient=gone).state == MemberState.CANCELLED
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE


# ---- 6. limit, time budget and `more` --------------------------------------------------------------------


def test_more_only_when_due_work_is_left_for_this_worker(monkeypatch):
    people(10, "m")
    campaign = launched("more")
    first = campaigns_advance(now=START, limit=4, batch_size=5)
    assert (first.decided, first.more) == (4, True)
    # The rest held by another worker: nothing this one could do, so no successor to start.
    holding, release = hold_first(monkeypatch)
    holder = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=6))
    holder.start()
    assert holding.wait(30)
    idle = campaigns_advance(now=START + timedelta(milliseconds=2), limit=3, batch_size=5, time_budget=0.5)
    assert (idle.decided, idle.more) == (0, False)
    release.set()
    holder.join(60)
    assert holder.error is None
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    _sent_once(10)


def test_a_task_whose_campaign_is_held_elsewhere_hands_over_to_nobody(monkeypatch):
    from journeys import tasks

    people(6, "k")
    launched("kick")
    kicks: list[int | None] = []
    monkeypatch.setattr(campaigns, "_kick", lambda tasks=None: kicks.append(tasks))
    holding, release = hold_first(monkeypatch)
    holder = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=6))
    holder.start()
    assert holding.wait(30)
    try:
        assert tasks.campaigns_advance_task() == 0
        assert campaigns.campaigns_advance_due(now=START + timedelta(seconds=1), limit=3) == 0
        assert kicks == []  # neither the task nor the due-work pass starts a successor
    finally:
        release.set()
        holder.join(60)
    assert holder.error is None


# ---- 7. a cancel racing the settle step ------------------------------------------------------------------


@pytest.mark.parametrize("first", ["settle", "cancel"])
def test_a_cancel_racing_the_settle_ends_coherent(monkeypatch, first):
    from journeys.campaigns import CampaignConflict

    people(4, f"z{first}")
    campaign = launched(f"race{first}")
    campaigns_advance(now=START, batch_size=4, limit=4)  # every member decided; not yet settled
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.SENDING
    # The settle step waits just before taking the row lock.
    holding, release = hold_first(monkeypatch, "_campaign_locked", before=True)
    settler = Worker(lambda: campaigns_advance(now=START + timedelta(seconds=1), batch_size=4))
    settler.start()
    assert holding.wait(30)
    if first == "settle":
        release.set()
        settler.join(60)
    canceller = Worker(
        lambda: campaign_transition(campaign=campaign, action="cancel", now=START + timedelta(seconds=2))
    )
    canceller.start()
    canceller.join(60)
    release.set()
    settler.join(60)
    assert settler.error is None, settler.error
    final = Campaign.objects.get(pk=campaign.pk)
    if first == "settle":
        assert isinstance(canceller.error, CampaignConflict) and final.status == CampaignStatus.DONE
    else:
        assert canceller.error is None and final.status == CampaignStatus.CANCELLED
        assert final.finished_at is None and final.cancelled_at is not None
    assert _states(campaign) == {MemberState.DECIDED: 4}


def test_a_pass_stopped_by_its_limit_with_the_rest_held_elsewhere_reports_no_more(monkeypatch):
    """The limit stops a pass right after its batch; the only due members left are in another worker's
    batch (that worker settles the campaign): nothing this pass could have done, so no successor."""
    people(10, "h")
    campaign = launched("held")
    holding, release = hold_first(monkeypatch)
    holder = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5))
    holder.start()
    assert holding.wait(30)
    try:
        work = campaigns_advance(now=START + timedelta(milliseconds=2), limit=5, batch_size=5)
        assert (work.decided, work.more) == (5, False)
    finally:
        release.set()
        holder.join(60)
    assert holder.error is None, holder.error
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    # Stopped by its limit with members it could claim, or with the campaign only left to settle: more.
    other = launched("held2")  # the same ten people
    first = campaigns_advance(now=START + timedelta(seconds=1), limit=6, batch_size=5)
    assert (first.decided, first.more) == (6, True)
    last = campaigns_advance(now=START + timedelta(seconds=2), limit=4, batch_size=5)
    assert (last.decided, last.more) == (4, True)
    assert Campaign.objects.get(pk=other.pk).status == CampaignStatus.SENDING
    assert campaigns_advance(now=START + timedelta(seconds=3), limit=4).more is False
    assert Campaign.objects.get(pk=other.pk).status == CampaignStatus.DONE


def test_a_slow_settle_does_not_write_an_older_wait_over_a_newer_one(monkeypatch):
    """Worker A (its clock at the Tokyo wave) settles the campaign while worker B (its clock at London's)
    holds the London batch: A finds the London members pending. If B sends them and settles (waiting for
    New York) before A takes the row lock, A must not write back "waiting for London"."""
    people(2, "wa", "Asia/Tokyo")
    people(2, "wb", "UTC")
    people(2, "wc", "America/New_York")
    campaign = launched("wait", schedule={"local_time": "10:00", "date": "2026-03-03"})
    campaigns_advance(now=START)
    tokyo = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    london, new_york = tokyo.replace(hour=10), tokyo.replace(hour=15)
    assert campaigns_advance(now=tokyo, limit=2).decided == 2  # the Tokyo wave, not yet settled
    holding, release = hold_first(monkeypatch, "_campaign_locked", before=True)
    a = Worker(lambda: campaigns_advance(now=tokyo + timedelta(seconds=1)))
    a.start()
    assert holding.wait(30)
    assert campaigns_advance(now=london).decided == 2  # B: London sent, settled for New York
    release.set()
    a.join(60)
    assert a.error is None, a.error
    waiting = Campaign.objects.get(pk=campaign.pk)
    assert waiting.next_run_at == new_york, waiting.note
    assert waiting.note == "Waiting: the next members are due at 2026-03-03 15:00 UTC."


def test_a_worker_walks_back_for_a_batch_that_rolled_back_behind_its_cursor(monkeypatch):
    """Worker B passed over A's batch (locked) and walked on; A's batch then fails and rolls back. When B
    finds nothing after its cursor it sees the due members behind it and walks again: it sends them in
    the same run, and the campaign ends."""
    people(15, "w")
    campaign = launched("walk")

    def boom():
        raise RuntimeError("lost the provider")

    holding, release = hold_first(monkeypatch, then=boom)
    failing = Worker(lambda: campaigns_advance(now=START + timedelta(milliseconds=1), batch_size=5))
    failing.start()
    assert holding.wait(30)
    real_settle = campaigns._campaign_settle
    settles = []

    def settle(campaign, now, cursors):
        if not settles:  # B's first settle: A's batch fails and rolls back now
            release.set()
            failing.join(60)
        settles.append(dict(cursors))
        return real_settle(campaign, now, cursors)

    monkeypatch.setattr(campaigns, "_campaign_settle", settle)
    work = campaigns_advance(now=START + timedelta(milliseconds=2), batch_size=5)
    assert isinstance(failing.error, RuntimeError)
    assert (work.decided, work.batches) == (15, 3)  # its own 10, then A's 5 behind its cursor
    assert settles[0]  # it had a cursor when it first found nothing
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    _sent_once(15)


# ---- all of it at once ------------------------------------------------------------------------------------


def test_three_workers_with_failing_batches_erasures_and_a_cancel_keep_every_invariant(monkeypatch):
    """Two campaigns (one in local-time waves), three workers with their own clocks, small batches and
    limits, one batch in seven failing, erasures and a cancel in a fourth thread: every member is decided
    once, never before it is due, the erased get nothing after their erasure, and both campaigns end."""
    import contextlib
    import random

    from orchestrator.erasure import recipient_erase
    from orchestrator.models import Recipient

    rnd = random.Random(7)
    people(12, "sa", "Asia/Tokyo")
    people(12, "sb", "UTC")
    people(12, "sc", "America/New_York")
    waves = launched("waves", schedule={"local_time": "10:00", "date": "2026-03-03"})
    now_one = launched("now")
    real, lock, failed = campaigns.messages_send_bulk, threading.Lock(), []

    def flaky(**kwargs):
        with lock:
            if rnd.random() < 1 / 7:
                failed.append(1)
                raise RuntimeError("flaky provider table")
        return real(**kwargs)

    monkeypatch.setattr(campaigns, "messages_send_bulk", flaky)
    moments = [START] + [datetime(2026, 3, 3, h, 0, tzinfo=UTC) for h in (1, 10, 15)]
    victims = list(Recipient.objects.order_by("pk").values_list("pk", flat=True)[::9])

    def work(k: int) -> None:
        for at in moments:
            for r in range(6):
                # A failed batch rolled back; a later pass sends its members.
                with contextlib.suppress(RuntimeError):
                    campaigns_advance(
                        now=at + timedelta(milliseconds=k + 10 * r),
                        batch_size=rnd.choice([1, 2, 3, 5]),
                        limit=rnd.choice([4, 7, 100]),
                    )

    def chaos() -> None:
        for pk in victims:
            recipient_erase(recipient=Recipient.objects.get(pk=pk), at=START)
        with contextlib.suppress(campaigns.CampaignConflict):  # it may be done first
            campaign_transition(campaign=now_one, action="cancel", now=START + timedelta(seconds=1))

    threads = [Worker(lambda k=k: work(k)) for k in range(3)] + [Worker(chaos)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not [t.error for t in threads if t.error], [t.error for t in threads]
    monkeypatch.setattr(campaigns, "messages_send_bulk", real)
    campaigns_advance(now=datetime(2026, 3, 4, tzinfo=UTC))
    assert failed
    assert Campaign.objects.get(pk=waves.pk).status == CampaignStatus.DONE
    assert Campaign.objects.get(pk=now_one.pk).status in (CampaignStatus.DONE, CampaignStatus.CANCELLED)
    for campaign in (waves, now_one):
        members = CampaignRecipient.objects.filter(campaign=campaign).select_related("message")
        # (a recipient erased before the campaign's start is not in its audience)
        assert members.count() >= 36 - len(victims) and not members.filter(state=MemberState.PENDING).exists()
        for member in members:
            if member.message_id:
                assert member.message.decided_at >= member.due_at
    messages = Message.objects.filter(source=Source.CAMPAIGN)
    assert messages.values("recipient", "source_ref").distinct().count() == messages.count()
    # What the erased were sent before their erasure was scrubbed with it; nothing came after.
    assert not messages.filter(recipient_id__in=victims).exclude(to_address="").exists()
