"""The history is the outbox: due accepted messages are claimed in batches (SKIP LOCKED), one wake-up per
burst, provider calls in a bounded pool within each provider's concurrency and rate limits."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections, transaction
from django.utils import timezone

from channels_app import delivery
from channels_app.backends import SendResult
from channels_app.delivery import DRAIN_TASK, deliveries_claim_due, deliveries_drain, deliveries_wake
from channels_app.models import AttemptOutcome, DeliveryAttempt, DeliveryWake
from channels_app.providers import ProviderSpec, TokenBucket, provider_limit
from orchestrator.models import Channel, Message, MessageStatus
from orchestrator.pipeline import message_send
from tests.orchestrator.factories import ReachableRecipientFactory

from .factories import AcceptedMessageFactory


@pytest.fixture
def wakeups(monkeypatch):
    """The django-q2 tasks delivery enqueues (not run)."""
    calls: list[tuple] = []
    monkeypatch.setattr(delivery, "async_task", lambda func, *args, **kw: calls.append((func, args)))
    return calls


@pytest.mark.django_db
def test_a_burst_of_sends_in_one_transaction_enqueues_one_wake_up(
    wakeups, django_capture_on_commit_callbacks
):
    people = ReachableRecipientFactory.create_batch(5)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for n in range(40):
            message_send(
                recipient=people[n % 5], channel="sms", purpose="transactional", content={"body": f"Code {n}"}
            )
    assert Message.objects.filter(status=MessageStatus.ACCEPTED).count() == 40
    assert wakeups == [(DRAIN_TASK, ())]  # one task, no message ids pickled into it


@pytest.mark.django_db
def test_many_transactions_share_the_pending_wake_up_until_a_drain_takes_it(
    wakeups, django_capture_on_commit_callbacks
):
    recipient = ReachableRecipientFactory()
    for n in range(25):  # 25 API requests, each its own transaction
        with django_capture_on_commit_callbacks(execute=True):
            message_send(
                recipient=recipient, channel="sms", purpose="transactional", content={"body": f"{n}"}
            )
    assert len(wakeups) == 1
    deliveries_drain()  # lowers the flag first, then delivers all 25
    assert Message.objects.filter(status=MessageStatus.SENT).count() == 25
    with django_capture_on_commit_callbacks(execute=True):
        message_send(recipient=recipient, channel="sms", purpose="transactional", content={"body": "later"})
    assert len(wakeups) == 2


@pytest.mark.django_db
def test_a_wake_up_flag_older_than_its_ttl_counts_as_lost(wakeups, settings):
    now = timezone.now()
    assert deliveries_wake(now=now) is True
    assert deliveries_wake(now=now + settings.CHANNELS["WAKE_TTL"] / 2) is False
    assert deliveries_wake(now=now + settings.CHANNELS["WAKE_TTL"] * 2) is True
    assert len(wakeups) == 2


@pytest.mark.django_db
def test_a_broker_that_is_down_lowers_the_flag_again(monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(delivery, "async_task", down)
    with pytest.raises(ConnectionError):
        deliveries_wake()
    assert DeliveryWake.objects.get().requested_at is None


@pytest.mark.django_db
def test_the_drain_leaves_messages_not_due_yet():
    now = timezone.now()
    due = AcceptedMessageFactory(channel=Channel.SMS)
    retry_later = AcceptedMessageFactory(channel=Channel.SMS)
    Message.objects.filter(pk=retry_later.pk).update(next_attempt_at=now + timezone.timedelta(minutes=5))
    deliveries_drain()
    assert Message.objects.get(pk=due.pk).status == MessageStatus.SENT
    assert Message.objects.get(pk=retry_later.pk).status == MessageStatus.ACCEPTED


@pytest.mark.django_db(transaction=True)
def test_two_workers_claiming_at_once_never_take_the_same_message():
    ids = {AcceptedMessageFactory(channel=Channel.SMS).pk for _ in range(120)}
    start = threading.Barrier(2)
    taken: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            start.wait()
            while True:
                claims, locked = deliveries_claim_due(now=timezone.now(), limit=7)
                taken[n] += [c.outgoing.message_id for c in claims]
                if locked < 7:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted(ids)
    assert DeliveryAttempt.objects.count() == 120  # one claim (one in-progress attempt) per message


# A backend that tracks how many of its calls are in flight at once (shared by the pool's threads).
IN_FLIGHT = {"now": 0, "max": 0, "calls": 0}
IN_FLIGHT_LOCK = threading.Lock()


class TrackingBackend:
    name = "tracking"
    limit = 3

    def send(self, outgoing):
        with IN_FLIGHT_LOCK:
            IN_FLIGHT["now"] += 1
            IN_FLIGHT["calls"] += 1
            IN_FLIGHT["max"] = max(IN_FLIGHT["max"], IN_FLIGHT["now"])
        # Hold the call until the limit is reached (or a while passed), so a pool that ignored the limit
        # would show more calls in flight; never a timed assertion.
        deadline = time.monotonic() + 2
        while IN_FLIGHT["now"] < self.limit and time.monotonic() < deadline:
            time.sleep(0.005)
        with IN_FLIGHT_LOCK:
            IN_FLIGHT["now"] -= 1
        return SendResult.success(f"t-{outgoing.message_id}")


@pytest.mark.django_db(transaction=True)
def test_the_pool_keeps_a_providers_calls_within_its_concurrency_limit(settings):
    IN_FLIGHT.update(now=0, max=0, calls=0)
    settings.CHANNELS = {
        **settings.CHANNELS,
        "BACKENDS": {**settings.CHANNELS["BACKENDS"], "sms": f"{__name__}.TrackingBackend"},
        "LIMITS": {"sms": {"CONCURRENCY": TrackingBackend.limit, "RATE_PER_SECOND": None}},
        "DELIVERY_THREADS": 10,
        "CLAIM_BATCH": 8,
    }
    ids = [AcceptedMessageFactory(channel=Channel.SMS).pk for _ in range(30)]
    assert deliveries_drain() == 30
    assert IN_FLIGHT["calls"] == 30
    assert IN_FLIGHT["max"] == TrackingBackend.limit  # concurrent, and never more than the limit
    assert Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() == 30
    assert DeliveryAttempt.objects.filter(outcome=AttemptOutcome.SUCCESS).count() == 30


def test_the_token_bucket_never_lets_more_than_the_rate_through():
    clock = [0.0]
    stamps: list[float] = []
    bucket = TokenBucket(rate=5, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    for _ in range(40):
        bucket.take()
        stamps.append(clock[0])
    # A burst of one second's worth, then the rate: by time t at most 5 + 5·t calls went through.
    assert all(n + 1 <= 5 + 5 * t + 1e-9 for n, t in enumerate(stamps))
    assert stamps[4] == 0 and stamps[-1] == pytest.approx((40 - 5) / 5)


@pytest.mark.django_db
def test_provider_calls_take_a_token_from_the_providers_bucket(settings, monkeypatch):
    settings.CHANNELS = {**settings.CHANNELS, "LIMITS": {"sms": {"CONCURRENCY": None, "RATE_PER_SECOND": 7}}}
    taken = []
    monkeypatch.setattr(TokenBucket, "take", lambda self: taken.append(self.rate))
    for _ in range(4):
        AcceptedMessageFactory(channel=Channel.SMS)
    deliveries_drain()
    assert taken == [7, 7, 7, 7]
    limit = provider_limit(spec=ProviderSpec("sms:locmem", "x", rate_per_second=7))
    assert limit.bucket is not None and limit.slots is None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_qcluster_delivers_a_burst_end_to_end(
    tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    from django_q.conf import Conf
    from django_q.models import OrmQ, Success

    from .test_fault_qcluster import calls, cluster, wait_for

    monkeypatch.setattr(Conf, "SYNC", False)  # the wake-up goes to the broker, for the cluster to run
    people = ReachableRecipientFactory.create_batch(10)
    with transaction.atomic():
        for n in range(60):
            message_send(
                recipient=people[n % 10],
                channel="sms",
                purpose="transactional",
                content={"body": f"Code {n}"},
            )
    assert OrmQ.objects.count() == 1  # the burst's one wake-up
    (tmp_path / "control").write_text("ok")
    # The sweeper waits a minute here: whatever is delivered was woken by the burst's wake-up.
    settings = {
        "CHANNEL_DELIVERY_THREADS": "8",
        "CHANNEL_CLAIM_BATCH": "10",
        "CHANNEL_REDRIVE_AFTER_SECONDS": "60",
    }
    with cluster(tmp_path, **settings):
        wait_for(
            lambda: Message.objects.filter(status=MessageStatus.SENT).count() == 60,
            timeout=90,
            what="every message sent",
            tmp_path=tmp_path,
        )
    assert DeliveryAttempt.objects.filter(outcome=AttemptOutcome.SUCCESS).count() == 60
    assert DeliveryAttempt.objects.count() == 60
    assert sorted(calls(tmp_path)) == sorted(
        (m, "success") for m in Message.objects.values_list("pk", flat=True)
    )
    assert Success.objects.count() + OrmQ.objects.count() <= 4  # a handful of wake-ups, not 60 tasks
