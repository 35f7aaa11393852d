from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from orchestrator.models import Event, IdempotencyKey, Recipient

from .factories import EventFactory, MessageFactory, RecipientFactory

pytestmark = pytest.mark.django_db


def test_event_for_a_known_recipient_is_recorded(api):
    RecipientFactory(external_id="e1")
    resp = api.post(
        "/api/v1/events/",
        {"recipient": "e1", "name": "app_open", "properties": {"screen": "home"}},
        format="json",
    )
    assert resp.status_code == 201, resp.json()
    event = Event.objects.get()
    assert event.name == "app_open" and event.properties == {"screen": "home"}


def test_event_for_an_unknown_recipient_is_404_and_writes_nothing(api):
    resp = api.post("/api/v1/events/", {"recipient": "stranger", "name": "purchase"}, format="json")
    assert resp.status_code == 404
    assert "create_recipient" in resp.json()["detail"]
    assert not Recipient.objects.exists() and not Event.objects.exists()


def test_event_can_create_its_recipient_when_asked(api):
    resp = api.post(
        "/api/v1/events/",
        {"recipient": "newbie", "name": "signup", "create_recipient": True, "timezone": "Europe/Paris"},
        format="json",
    )
    assert resp.status_code == 201
    assert Recipient.objects.get(external_id="newbie").timezone == "Europe/Paris"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"recipient": "e2"}, "name"),
        ({"name": "x"}, "recipient"),
        ({"recipient": "e2", "name": "x", "occurred_at": "yesterday"}, "occurred_at"),
        ({"recipient": "e2", "name": "x", "properties": "nope"}, "properties"),
    ],
)
def test_bad_event_is_400_with_the_field(api, body, field):
    RecipientFactory(external_id="e2")
    resp = api.post("/api/v1/events/", body, format="json")
    assert resp.status_code == 400 and field in resp.json()
    assert not Event.objects.exists()


def test_event_with_bad_timezone_for_a_new_recipient_writes_nothing(api):
    resp = api.post(
        "/api/v1/events/",
        {"recipient": "nb", "name": "signup", "create_recipient": True, "timezone": "Nope/Nope"},
        format="json",
    )
    assert resp.status_code == 400
    assert not Recipient.objects.exists() and not Event.objects.exists()


def test_event_idempotency_key_replays_and_conflicts(api):
    RecipientFactory(external_id="e3")
    body = {"recipient": "e3", "name": "purchase", "properties": {"total": 12}}
    first = api.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = api.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Event.objects.count() == 1
    other = api.post("/api/v1/events/", {**body, "name": "refund"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_conflict"
    assert Event.objects.count() == 1


def test_failed_request_does_not_pin_its_idempotency_key(api):
    bad = api.post(
        "/api/v1/events/", {"recipient": "later", "name": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="k2"
    )
    assert bad.status_code == 404
    assert not IdempotencyKey.objects.exists()


def test_messages_are_newest_first_and_filterable(api):
    recipient = RecipientFactory(external_id="h1")
    now = timezone.now()
    old = MessageFactory(recipient=recipient, channel="email", created_at=now - timedelta(hours=30))
    push = MessageFactory(
        recipient=recipient,
        channel="push",
        content={"title": "t", "body": "b"},
        created_at=now - timedelta(hours=2),
    )
    promo = MessageFactory(
        recipient=recipient, channel="email", purpose="promotional", created_at=now - timedelta(hours=1)
    )
    MessageFactory(channel="email")  # someone else's

    ids = lambda resp: [m["id"] for m in resp.json()["results"]]  # noqa: E731
    url = "/api/v1/recipients/h1/messages/"
    assert ids(api.get(url)) == [promo.id, push.id, old.id]
    assert ids(api.get(url, {"channel": "push"})) == [push.id]
    assert ids(api.get(url, {"purpose": "promotional"})) == [promo.id]
    assert ids(api.get(url, {"status": "accepted", "channel": "email"})) == [promo.id, old.id]
    since = (now - timedelta(hours=24)).isoformat()
    assert ids(api.get(url, {"since": since})) == [promo.id, push.id]
    until = (now - timedelta(hours=90 / 60)).isoformat()
    assert ids(api.get(url, {"since": since, "until": until})) == [push.id]


def test_messages_bad_filter_is_400(api):
    RecipientFactory(external_id="h2")
    resp = api.get("/api/v1/recipients/h2/messages/", {"channel": "fax"})
    assert resp.status_code == 400 and "channel" in resp.json()


def test_messages_of_unknown_recipient_is_404(api):
    assert api.get("/api/v1/recipients/zz/messages/").status_code == 404


def test_timeline_interleaves_messages_and_events_in_time_order(api):
    recipient = RecipientFactory(external_id="t1")
    now = timezone.now()
    m1 = MessageFactory(recipient=recipient, created_at=now - timedelta(hours=5))
    e1 = EventFactory(recipient=recipient, name="app_open", occurred_at=now - timedelta(hours=4))
    m2 = MessageFactory(
        recipient=recipient,
        channel="push",
        content={"title": "x", "body": "y"},
        created_at=now - timedelta(hours=3),
    )
    e2 = EventFactory(recipient=recipient, name="purchase", occurred_at=now - timedelta(hours=1))
    resp = api.get("/api/v1/recipients/t1/timeline/")
    assert resp.status_code == 200
    got = [(e["kind"], (e["message"] or e["event"])["id"]) for e in resp.json()]
    assert got == [("event", e2.id), ("message", m2.id), ("event", e1.id), ("message", m1.id)]
    times = [e["at"] for e in resp.json()]
    assert times == sorted(times, reverse=True)

    limited = api.get("/api/v1/recipients/t1/timeline/", {"limit": 2}).json()
    assert [(e["kind"]) for e in limited] == ["event", "message"]
    bounded = api.get(
        "/api/v1/recipients/t1/timeline/",
        {
            "since": (now - timedelta(hours=4, minutes=30)).isoformat(),
            "until": (now - timedelta(hours=2)).isoformat(),
        },
    ).json()
    assert [(e["kind"]) for e in bounded] == ["message", "event"]


def test_timeline_bad_since_is_400(api):
    RecipientFactory(external_id="t2")
    assert api.get("/api/v1/recipients/t2/timeline/", {"since": "soon"}).status_code == 400


def test_schema_and_docs_are_served(client, api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/recipients/" in paths and "/api/v1/events/" in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_idempotency_keys_belong_to_their_caller(api, django_user_model):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    RecipientFactory(external_id="e4")
    other = APIClient()
    other_user = django_user_model.objects.create_user(username="billing", password="x-pass-123")
    other_user.groups.add(Group.objects.get(name="Service"))
    other.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other_user).key}")
    first = api.post(
        "/api/v1/events/",
        {"recipient": "e4", "name": "purchase"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="order-1",
    )
    second = other.post(
        "/api/v1/events/",
        {"recipient": "e4", "name": "refund"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="order-1",
    )
    assert first.status_code == second.status_code == 201
    assert Event.objects.count() == 2
