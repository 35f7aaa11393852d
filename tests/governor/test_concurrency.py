"""Racing decisions on real PostgreSQL: committed transactions on separate connections (one per thread)."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from governor.defaults import defaults_install
from governor.models import CapRule, QuietHours
from governor.policy import policy_cache_clear
from orchestrator.models import Message, MessageStatus, Recipient
from orchestrator.pipeline import message_send
from tests.orchestrator.factories import ReachableRecipientFactory

from .helpers import sent

THREADS = 16
ROUNDS = 12
EMAIL = {"subject": "A nudge", "body": "Something you may like."}


def race(recipients: list[Recipient], at) -> tuple[list[Message], list[BaseException]]:
    """THREADS threads send one engagement email each to every recipient, all released at once."""
    barrier = threading.Barrier(THREADS, timeout=30)
    results: list[Message] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker():
        try:
            barrier.wait()
            for r in recipients:
                m = message_send(recipient=r, channel="email", purpose="engagement", content=EMAIL, at=at)
                with lock:
                    results.append(m)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            with lock:
                errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection: close it

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock?)"
    return results, errors


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_racing_sends_at_cap_minus_one_let_exactly_one_through_per_round():
    CapRule.objects.all().delete()
    QuietHours.objects.all().delete()
    defaults_install(CapRule, QuietHours)
    policy_cache_clear()
    now = timezone.now()
    for round_no in range(ROUNDS):
        # Each round: fresh recipients sitting at cap - 1 (2 of 3 in the last 24 h); a later round
        # races over several recipients at once (lock waits interleave across rows).
        recipients = [ReachableRecipientFactory() for _ in range(1 if round_no % 3 else 3)]
        for r in recipients:
            sent(r, now - timedelta(hours=5))
            sent(r, now - timedelta(hours=2), channel="in_app")
        at = now + timedelta(seconds=round_no)
        results, errors = race(recipients, at)
        assert errors == []
        assert len(results) == THREADS * len(recipients)
        for r in recipients:
            outcomes = Counter(m.status for m in results if m.recipient_id == r.pk)
            assert outcomes == {MessageStatus.ACCEPTED: 1, MessageStatus.DEFERRED: THREADS - 1}, outcomes
            cleared = Message.objects.filter(
                recipient=r, accepted_at__gt=at - timedelta(hours=24), accepted_at__lte=at
            ).count()
            assert cleared == 3  # 0 over cap
            waiting = Message.objects.filter(recipient=r, status=MessageStatus.DEFERRED)
            assert {m.deliver_after for m in waiting} == {now - timedelta(hours=5) + timedelta(hours=24)}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_redrives_and_sends_never_exceed_a_cap():
    """Re-drive passes (SKIP LOCKED) racing each other and fresh sends: each waiting message is taken
    once, and no recipient ends up over the cap."""
    from governor.services import deferred_redrive
    from tests.orchestrator.factories import MessageFactory

    CapRule.objects.all().delete()
    QuietHours.objects.all().delete()
    defaults_install(CapRule, QuietHours)
    policy_cache_clear()
    now = timezone.now()
    recipients = [ReachableRecipientFactory() for _ in range(12)]
    for r in recipients:
        sent(r, now - timedelta(hours=30))  # outside the window: the cap is free
        for i in range(6):
            MessageFactory(
                recipient=r,
                priority=40 + i,
                status=MessageStatus.DEFERRED,
                created_at=now - timedelta(hours=1, minutes=i),
                decided_at=now - timedelta(hours=1),
                deferred_at=now - timedelta(hours=1),
                accepted_at=None,
                deliver_after=now - timedelta(minutes=1),
            )
    barrier = threading.Barrier(6, timeout=30)
    errors: list[BaseException] = []

    def redrive():
        try:
            barrier.wait()
            deferred_redrive(now=now, limit=7)  # small passes interleave across recipients
            deferred_redrive(now=now, limit=1000)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    def send(r):
        try:
            barrier.wait()
            message_send(recipient=r, channel="email", purpose="engagement", content=EMAIL, at=now)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=redrive) for _ in range(3)]
    threads += [threading.Thread(target=send, args=(recipients[i],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and errors == []
    assert not Message.objects.filter(status=MessageStatus.DEFERRED, deliver_after__lte=now).exists()
    for r in recipients:
        cleared = Message.objects.filter(recipient=r, accepted_at__gt=now - timedelta(hours=24)).count()
        assert cleared == 3, (r.pk, cleared)
    for r in recipients[3:]:  # no newcomer: the three highest priorities won, whichever pass took them
        won = Message.objects.filter(recipient=r, accepted_at__gt=now - timedelta(hours=24)).values_list(
            "priority", flat=True
        )
        assert sorted(won) == [43, 44, 45]
