"""A campaign run by a real qcluster: approving it starts CAMPAIGN_TASKS tasks on the cluster's two
workers, which share its batches; every member is decided once, every message handed over once."""

from __future__ import annotations

import collections

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Success

from journeys.campaigns import campaign_create, campaign_transition
from journeys.models import Campaign, CampaignRecipient, CampaignStatus, MemberState
from orchestrator.models import Channel, Message, MessageStatus, Segment, Source
from tests.channels_app.test_fault_qcluster import calls, cluster, wait_for
from tests.orchestrator.factories import ContactPointFactory, RecipientFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
N = 120


def test_two_cluster_workers_share_a_campaign_and_send_each_member_once(tmp_path, monkeypatch):
    (tmp_path / "control").write_text("ok")
    for i in range(N):
        recipient = RecipientFactory(external_id=f"q{i}", timezone="UTC")
        ContactPointFactory(recipient=recipient, channel=Channel.SMS, address=f"+1415555{i:04d}")
    segment = Segment.objects.create(name="Everyone", conditions=[])
    now = timezone.now()
    campaign = campaign_create(
        data={
            "name": "Cluster",
            "segment": segment.pk,
            "channel": "sms",
            "purpose": "transactional",
            "content": {"body": "Your order shipped."},
        },
        now=now,
    )
    campaign = campaign_transition(campaign=campaign, action="propose", now=now)
    # The approval's tasks go to the broker for the cluster (the test settings run tasks inline).
    monkeypatch.setattr(Conf, "SYNC", False)
    # No due-work loop: the approval's tasks alone send it.
    with cluster(tmp_path, sweeper=False, CAMPAIGN_BATCH_SIZE="10", CAMPAIGN_TASKS="2"):
        campaign = campaign_transition(campaign=campaign, action="approve", now=timezone.now())
        wait_for(
            lambda: Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE,
            timeout=60,
            what="the campaign to finish",
            tmp_path=tmp_path,
        )
        wait_for(
            lambda: Message.objects.filter(source=Source.CAMPAIGN, status=MessageStatus.SENT).count() == N,
            timeout=60,
            what="every message sent",
            tmp_path=tmp_path,
        )
    members = CampaignRecipient.objects.filter(campaign=campaign)
    states = collections.Counter(members.values_list("state", flat=True))
    assert states == {MemberState.DECIDED: N}
    messages = Message.objects.filter(source=Source.CAMPAIGN)
    assert messages.count() == N and messages.values("recipient").distinct().count() == N
    delivered = collections.Counter(message for message, outcome in calls(tmp_path) if outcome == "success")
    assert len(delivered) == N and set(delivered.values()) == {1}
    # Two tasks ran it (the approval's), and between them each member once.
    tasks = Success.objects.filter(func="journeys.tasks.campaigns_advance_task")
    assert tasks.count() >= 2 and sum(t.result for t in tasks) == N
