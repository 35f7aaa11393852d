"""Starting a campaign (its audience written down) while other work runs: a task waits for a campaign
another task is starting, to share its batches; the due-work pass passes over it and goes on."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction

from journeys.campaigns import campaigns_advance, campaigns_advance_due
from journeys.models import Campaign, CampaignStatus
from tests.journeys.campaign_workers import START, launched, no_kick, people  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_kick")]


@pytest.fixture
def scheduled():
    people(3, "s")
    campaign = launched("s")
    assert campaign.status == CampaignStatus.SCHEDULED
    return campaign


def _held(campaign, seconds: float) -> threading.Thread:
    """Another worker in the middle of starting the campaign: its row locked for `seconds`."""
    locked = threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                Campaign.objects.select_for_update().get(pk=campaign.pk)
                locked.set()
                time.sleep(seconds)
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10)
    return thread


def test_the_due_work_pass_does_not_wait_for_a_campaign_being_started(scheduled):
    holder = _held(scheduled, 3.0)
    try:
        began = time.monotonic()
        assert campaigns_advance_due(now=START + timedelta(milliseconds=5), limit=100) == 0
        assert time.monotonic() - began < 2.0
    finally:
        holder.join(10)
    assert Campaign.objects.get(pk=scheduled.pk).status == CampaignStatus.SCHEDULED


def test_a_task_waits_for_a_campaign_being_started_and_then_sends_it(scheduled):
    holder = _held(scheduled, 1.0)
    try:
        began = time.monotonic()
        work = campaigns_advance(now=START + timedelta(milliseconds=5))
        assert time.monotonic() - began >= 0.5
    finally:
        holder.join(10)
    assert (work.started, work.decided) == (1, 3)
    assert Campaign.objects.get(pk=scheduled.pk).status == CampaignStatus.DONE
