"""The cap holds under concurrency as a service meets it: many clients POST to the real API at once, each
request reading its own clock, every transaction really committed (one connection per thread).

The first version counted the window up to the caller's clock reading, taken before it waited for the
recipient's lock: a message committed meanwhile with a later timestamp was missed, and two sends passed a
cap with one slot left. These tests failed on that code.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from governor.defaults import defaults_install
from governor.models import CapRule, QuietHours
from governor.policy import policy_cache_clear
from journeys.models import Enrollment
from journeys.scheduler import enrollments_advance
from orchestrator.models import Message, MessageStatus
from tests.journeys.factories import active_journey
from tests.orchestrator.factories import ReachableRecipientFactory

from .helpers import sent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROUNDS = 50
EMAIL = {"subject": "A nudge", "body": "Something you may like."}
WINDOW = timedelta(hours=24)


def default_governor() -> None:
    CapRule.objects.all().delete()
    QuietHours.objects.all().delete()
    defaults_install(CapRule, QuietHours)
    policy_cache_clear()


def daytime_zone() -> str:
    """A fixed-offset zone where it is now early afternoon, so quiet hours never hold a push."""
    hour = timezone.now().hour
    offset = 13 - hour  # local = UTC + offset
    offset = (offset + 12) % 24 - 12
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def at_cap_minus_one(n: int = 1) -> list:
    """Fresh recipients with 2 of their 3 engagement messages of the day spent."""
    now = timezone.now()
    people = [ReachableRecipientFactory(timezone=daytime_zone()) for _ in range(n)]
    for r in people:
        sent(r, now - timedelta(hours=5))
        sent(r, now - timedelta(hours=2), channel="in_app")
    return people


def cleared_in_any_window(recipient) -> int:
    """The most cleared engagement/promotional messages inside any 24-hour window (what the cap promises)."""
    times = sorted(
        Message.objects.filter(
            recipient=recipient, accepted_at__isnull=False, purpose__in=["engagement", "promotional"]
        ).values_list("accepted_at", flat=True)
    )
    return max((sum(1 for t in times if s <= t < s + WINDOW) for s in times), default=0)


class Clients:
    """`n` threads, each with its own API client and database connection, that POST together per round."""

    def __init__(self, api: APIClient, n: int):
        self.n, self.credentials = n, dict(api._credentials)
        self.start, self.done = threading.Barrier(n + 1, timeout=60), threading.Barrier(n + 1, timeout=120)
        self.job = None
        self.results: list = []
        self.errors: list = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, index: int) -> None:
        client = APIClient()
        client.credentials(**self.credentials)
        try:
            while True:
                self.start.wait()
                job = self.job
                if job is None:
                    return
                try:
                    response = job(client, index)
                    with self.lock:
                        self.results.append(response)
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    with self.lock:
                        self.errors.append(exc)
                self.done.wait()
        finally:
            connection.close()

    def round(self, job) -> list:
        self.job, self.results, self.errors = job, [], []
        self.start.wait()
        self.done.wait()
        assert self.errors == []
        return self.results

    def close(self) -> None:
        self.job = None
        self.start.wait()
        for t in self.threads:
            t.join(timeout=30)


@pytest.fixture
def clients(api):
    made = []

    def make(n: int) -> Clients:
        made.append(Clients(api, n))
        return made[-1]

    yield make
    for c in made:
        c.close()


def post_email(recipient_id: str):
    def job(client: APIClient, index: int = 0):
        body = {"recipient": recipient_id, "channel": "email", "purpose": "engagement", "content": EMAIL}
        return client.post("/api/v1/messages/", body, format="json")

    return job


@pytest.mark.parametrize("threads", [16, 64])
def test_racing_api_sends_at_cap_minus_one_never_pass_the_cap(clients, threads):
    default_governor()
    pool = clients(threads)
    over = []
    for _ in range(ROUNDS):
        (r,) = at_cap_minus_one()
        responses = pool.round(post_email(r.external_id))
        assert [x.status_code for x in responses] == [201] * threads
        outcomes = Counter(x.json()["status"] for x in responses)
        if outcomes[MessageStatus.ACCEPTED] != 1 or cleared_in_any_window(r) != 3:
            over.append((r.external_id, dict(outcomes), cleared_in_any_window(r)))
    assert over == [], f"rounds over the cap: {over}"


def test_journey_batches_racing_api_sends_never_pass_the_cap(clients):
    """A journey's push step for people at cap − 1 while services send them email: one of them clears."""
    default_governor()
    journey = active_journey()  # nudge: an engagement push
    pool = clients(8)
    over = []
    for _ in range(ROUNDS // 5):
        people = at_cap_minus_one(4)
        now = timezone.now()
        Enrollment.objects.bulk_create(
            Enrollment(
                journey=journey,
                version=journey.live_version,
                recipient=r,
                step_id="nudge",
                next_run_at=now,
                entered_at=now,
            )
            for r in people
        )
        jobs = [post_email(r.external_id) for r in people]

        def job(client, index, jobs=jobs):
            # Two threads run the scheduler with their own clock; the others send through the API.
            if index < 2:
                enrollments_advance(now=timezone.now())
                return None
            return jobs[index % len(jobs)](client)

        pool.round(job)
        for r in people:
            if cleared_in_any_window(r) > 3:
                over.append(r.external_id)
    assert over == []


def test_the_redrive_racing_api_sends_never_passes_the_cap(clients):
    """Deferred messages due now are re-decided while services send to the same people."""
    from governor.redrive import deferred_redrive

    default_governor()
    pool = clients(8)
    over = []
    for _ in range(ROUNDS // 5):
        people = at_cap_minus_one(4)
        now = timezone.now()
        for r in people:  # one deferred message each, due now
            Message.objects.create(
                recipient=r,
                channel="email",
                purpose="engagement",
                content=EMAIL,
                status=MessageStatus.DEFERRED,
                deliver_after=now - timedelta(seconds=1),
                created_at=now - timedelta(minutes=30),
                deferred_at=now - timedelta(minutes=30),
            )

        def job(client, index, people=people):
            if index < 2:
                deferred_redrive(now=timezone.now(), limit=100)
                return None
            return post_email(people[index % len(people)].external_id)(client)

        pool.round(job)
        for r in people:
            if cleared_in_any_window(r) > 3:
                over.append(r.external_id)
    assert over == []
