"""Two workers draining one campaign at once (real commits, each with its own clock reading): every member
is decided exactly once."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from journeys.campaigns import campaign_create, campaign_transition, campaigns_advance
from journeys.models import Campaign, CampaignRecipient, CampaignStatus, MemberState
from orchestrator.models import Message, Segment, Source
from tests.orchestrator.factories import ContactPointFactory, RecipientFactory

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


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

    errors, barrier = [], threading.Barrier(2)

    def worker(offset_ms: int) -> None:
        try:
            barrier.wait()
            for round_ in range(6):
                campaigns_advance(now=START + timedelta(milliseconds=offset_ms + 7 * round_), batch_size=5)
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
    campaigns_advance(now=START + timedelta(seconds=5))
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE
    assert CampaignRecipient.objects.filter(campaign=campaign, state=MemberState.DECIDED).count() == 40
    messages = Message.objects.filter(source=Source.CAMPAIGN)
    assert messages.count() == 40 and messages.values("recipient").distinct().count() == 40
