"""Campaigns before they send: input, lifecycle, scheduling and the written-down audience."""

from datetime import UTC, date, datetime, time, timedelta

import pytest

from journeys.campaigns import _campaigns_start, local_due
from journeys.models import Campaign, CampaignRecipient, CampaignStatus, MemberState
from orchestrator.models import Segment
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/campaigns/"
AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def segment():
    return Segment.objects.create(
        name="Everyone reachable", conditions=[{"field": "reachable", "op": "exists"}]
    )


def body(segment, **extra):
    return {
        "name": "Spring sale",
        "segment": segment.pk,
        "channel": "email",
        "purpose": "promotional",
        "content": {"subject": "Spring sale", "body": "Everything 20% off this week."},
        **extra,
    }


def act(api, cid, action, **data):
    return api.post(f"{URL}{cid}/{action}/", data, format="json")


def test_a_campaign_goes_draft_proposed_scheduled_and_shows_itself(api, segment):
    resp = api.post(
        URL, body(segment, schedule={"at": "2099-01-01T10:00:00Z"}, throttle_per_minute=100), format="json"
    )
    assert resp.status_code == 201, resp.json()
    campaign = resp.json()
    assert campaign["status"] == "draft" and campaign["schedule"] == {"at": "2099-01-01T10:00:00Z"}
    assert campaign["progress"]["audience"] == 0 and campaign["throttle_per_minute"] == 100
    cid = campaign["id"]

    assert act(api, cid, "approve").status_code == 409  # not proposed yet
    assert act(api, cid, "propose").json()["status"] == "proposed"
    assert act(api, cid, "reject").json()["status"] == "draft"
    assert act(api, cid, "propose").status_code == 200
    approved = act(api, cid, "approve").json()
    assert approved["status"] == "scheduled" and approved["approved_by"] == "service"
    assert api.patch(f"{URL}{cid}/", {"name": "Late edit"}, format="json").status_code == 409
    assert api.get(f"{URL}{cid}/").json()["progress"]["undecided"] == 0  # not started: 2099
    assert act(api, cid, "dance").status_code == 404


def test_cancelling_a_finished_campaign_is_409(api, segment):
    cid = api.post(URL, body(segment), format="json").json()["id"]
    assert act(api, cid, "cancel").json()["status"] == "cancelled"
    resp = act(api, cid, "cancel")
    assert resp.status_code == 409 and resp.json()["code"] == "illegal_transition"
    Campaign.objects.filter(pk=cid).update(status=CampaignStatus.DONE)
    assert act(api, cid, "cancel").status_code == 409


def test_a_draft_can_be_edited(api, segment):
    cid = api.post(URL, body(segment), format="json").json()["id"]
    resp = api.patch(f"{URL}{cid}/", {"priority": 80, "schedule": {"local_time": "10:00"}}, format="json")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["priority"] == 80 and resp.json()["schedule"] == {"local_time": "10:00"}
    resp = api.patch(f"{URL}{cid}/", {"channel": "fax"}, format="json")
    assert resp.status_code == 400 and "channel" in resp.json()
    assert Campaign.objects.get().channel == "email"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"name": ""}, "name"),
        ({"segment": 999999}, "segment"),
        ({"segment": "no such segment"}, "segment"),
        ({"channel": "fax"}, "channel"),
        ({"purpose": "spam"}, "purpose"),
        ({"content": None}, "content"),
        ({"content": {"body": "x", "footer": "y"}}, "content"),
        ({"content": {"body": "no subject on email"}}, "content"),
        ({"template": "nope"}, "template"),
        ({"priority": 101}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "not a date"}, "expires_at"),
        ({"schedule": {"at": "soon"}}, "schedule.at"),
        ({"schedule": {"at": "0001-01-01T00:00:00Z"}}, "schedule.at"),
        ({"schedule": {"local_time": "25:00"}}, "schedule.local_time"),
        ({"schedule": {"local_time": "10:00", "date": "9999-12-31"}}, "schedule.date"),
        ({"schedule": {"when": "later"}}, "schedule"),
        ({"schedule": "tomorrow"}, "schedule"),
        ({"throttle_per_minute": 0}, "throttle_per_minute"),
        ({"data": ["x"]}, "data"),
        ({"data": {"x": "a\x00b"}}, "data.x"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_campaign_input_is_400_with_the_field_and_writes_nothing(api, segment, change, field):
    resp = api.post(URL, {**body(segment), **change}, format="json")
    assert resp.status_code == 400, resp.json()
    assert field in resp.json(), resp.json()
    assert not Campaign.objects.exists()


def test_a_non_object_body_is_400(api):
    assert api.post(URL, ["x"], format="json").status_code == 400


@pytest.mark.parametrize(
    "zone,expected",
    [
        ("America/Los_Angeles", datetime(2026, 3, 2, 18, 0, tzinfo=UTC)),  # UTC−8
        ("UTC", datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),
        ("Asia/Tokyo", datetime(2026, 3, 3, 1, 0, tzinfo=UTC)),  # UTC+9: its 10:00 on the 2nd has passed
    ],
)
def test_local_time_is_each_zones_next_ten_oclock(zone, expected):
    not_before = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert local_due(zone=zone, local_time=time(10), local_date=None, not_before=not_before) == expected


def test_local_time_on_a_date_across_a_dst_change():
    # New York moves to UTC−4 on 2026-03-08: 10:00 that day is 14:00 UTC, the day before 15:00 UTC.
    before = datetime(2026, 3, 1, tzinfo=UTC)
    assert local_due(
        zone="America/New_York", local_time=time(10), local_date=date(2026, 3, 8), not_before=before
    ) == datetime(2026, 3, 8, 14, 0, tzinfo=UTC)
    assert local_due(
        zone="America/New_York", local_time=time(10), local_date=date(2026, 3, 7), not_before=before
    ) == datetime(2026, 3, 7, 15, 0, tzinfo=UTC)


def test_the_audience_is_written_down_once_with_each_members_due_moment(api, segment):
    la = ReachableRecipientFactory(external_id="la", timezone="America/Los_Angeles")
    utc = ReachableRecipientFactory(external_id="utc", timezone="UTC")
    tokyo = ReachableRecipientFactory(external_id="tokyo", timezone="Asia/Tokyo")
    cid = api.post(
        URL, body(segment, schedule={"local_time": "10:00", "date": "2026-03-03"}), format="json"
    ).json()["id"]
    act(api, cid, "propose")
    act(api, cid, "approve")
    Campaign.objects.filter(pk=cid).update(next_run_at=AT, approved_at=AT)
    assert _campaigns_start(now=AT) == 1
    campaign = Campaign.objects.get(pk=cid)
    assert campaign.status == CampaignStatus.SENDING and campaign.audience == 3
    due = dict(CampaignRecipient.objects.values_list("recipient_id", "due_at"))
    assert due == {
        la.pk: datetime(2026, 3, 3, 18, 0, tzinfo=UTC),
        utc.pk: datetime(2026, 3, 3, 10, 0, tzinfo=UTC),
        tokyo.pk: datetime(2026, 3, 3, 1, 0, tzinfo=UTC),
    }
    assert campaign.next_run_at == datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    assert _campaigns_start(now=AT + timedelta(hours=1)) == 0  # written once
    assert CampaignRecipient.objects.count() == 3


def test_a_campaign_to_an_empty_segment_is_allowed_and_shows_zero(api):
    nobody = Segment.objects.create(name="Nobody", conditions=[{"event": "never"}])
    ReachableRecipientFactory()
    cid = api.post(URL, body(nobody), format="json").json()["id"]
    act(api, cid, "propose")
    act(api, cid, "approve")
    assert _campaigns_start(now=datetime.now(UTC)) == 1
    shown = api.get(f"{URL}{cid}/").json()
    assert shown["status"] == "done" and shown["progress"]["audience"] == 0
    assert act(api, cid, "cancel").status_code == 409


def test_cancel_stops_every_undecided_member(api, segment):
    for _ in range(3):
        ReachableRecipientFactory()
    cid = api.post(URL, body(segment, schedule={"at": "2099-01-01T00:00:00Z"}), format="json").json()["id"]
    act(api, cid, "propose")
    act(api, cid, "approve")
    _campaigns_start(now=datetime(2099, 1, 1, tzinfo=UTC))
    resp = act(api, cid, "cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert resp.json()["progress"]["cancelled"] == 3 and resp.json()["progress"]["undecided"] == 0
    assert not CampaignRecipient.objects.filter(state=MemberState.PENDING).exists()


def test_a_segment_in_use_cannot_be_deleted(api, segment):
    api.post(URL, body(segment), format="json")
    resp = api.delete(f"/api/v1/segments/{segment.pk}/")
    assert resp.status_code == 409 and resp.json()["code"] == "segment_in_use"
