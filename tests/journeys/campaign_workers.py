"""Helpers for tests of workers sharing campaigns: threads with their own connections, a batch held open,
campaigns launched to a made-up population. The workers are the test's threads, so a test using them
takes the `no_kick` fixture (the test settings would run the approval's tasks inline, at the real time,
and send everything before a worker starts)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.db import connection

from journeys import campaigns
from journeys.campaigns import campaign_create, campaign_transition
from journeys.models import Campaign
from orchestrator.models import Segment
from tests.orchestrator.factories import ContactPointFactory, RecipientFactory

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday; no DST change that week
MAIL = {"subject": "Receipt", "body": "Thanks."}


@pytest.fixture
def no_kick(monkeypatch):
    """Approving does not also run the campaign's tasks (inline, in the test settings)."""
    monkeypatch.setattr(campaigns, "_kick", lambda tasks=None: None)


def people(n: int, prefix: str, zone: str = "UTC") -> None:
    for i in range(n):
        ContactPointFactory(recipient=RecipientFactory(external_id=f"{prefix}{i}", timezone=zone))


def launched(prefix: str, **fields) -> Campaign:
    segment = Segment.objects.create(name=f"All {prefix}", conditions=[])
    data = {
        "name": f"Shared {prefix}",
        "segment": segment.pk,
        "channel": "email",
        "purpose": "transactional",
        "content": MAIL,
    }
    campaign = campaign_create(data={**data, **fields}, now=START)
    for action in ("propose", "approve"):
        campaign = campaign_transition(campaign=campaign, action=action, now=START)
    return campaign


class Worker(threading.Thread):
    """Runs `fn` on its own connection; keeps its result or its exception."""

    def __init__(self, fn: Callable[[], object]):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except Exception as exc:  # noqa: BLE001 - the test reads it
            self.error = exc
        finally:
            connection.close()


def hold_first(monkeypatch, name: str = "_batch_send", *, before: bool = False, then=None):
    """Make the first call of campaigns.<name> (in whichever thread) wait until `release` is set, after
    (or `before`) the real call; `then` may replace the real call's result for that first call (raise).
    Returns (holding, release)."""
    holding, release = threading.Event(), threading.Event()
    real = getattr(campaigns, name)
    first = threading.Lock()

    def held(*args, **kwargs):
        if not first.acquire(blocking=False):
            return real(*args, **kwargs)
        if before:
            holding.set()
            assert release.wait(30), "never released"
        result = real(*args, **kwargs)
        if not before:
            holding.set()
            assert release.wait(30), "never released"
        if then is not None:
            then()
        return result

    monkeypatch.setattr(campaigns, name, held)
    return holding, release
