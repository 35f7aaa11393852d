import pytest

from orchestrator.models import Message

from .factories import ReachableRecipientFactory, RecipientFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/messages/"
EMAIL = {"subject": "Your receipt", "body": "Thanks for your order."}


def send(api, **body):
    payload = {"recipient": "m1", "channel": "email", "purpose": "transactional", "content": EMAIL, **body}
    return api.post(URL, payload, format="json")


def test_send_returns_the_decision(api):
    ReachableRecipientFactory(external_id="m1")
    resp = send(api)
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert set(body) >= {"id", "status", "channel", "reason", "rule", "deliver_after"}
    message = Message.objects.get(pk=body["id"])
    assert message.recipient.external_id == "m1" and message.channel == "email"


def test_get_message_shows_decision_and_attempts(api):
    ReachableRecipientFactory(external_id="m1")
    mid = send(api).json()["id"]
    resp = api.get(f"{URL}{mid}/")
    assert resp.status_code == 200
    assert resp.json()["id"] == mid and "attempts_detail" in resp.json()
    assert api.get(f"{URL}999999/").status_code == 404


@pytest.mark.parametrize(
    "body,field",
    [
        ({"channel": "fax"}, "channel"),
        ({"purpose": "spam"}, "purpose"),
        ({"priority": 101}, "priority"),
        ({"priority": -1}, "priority"),
        ({"content": "hello"}, "content"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"channel": "sms", "content": {"body": "Code 1234"}, "to": "+14155550000"}, "to"),
        ({"channel": "push", "content": {"title": "t", "body": "b"}, "to": "not-my-token"}, "to"),
    ],
)
def test_bad_send_is_400_with_the_field_and_writes_nothing(api, body, field):
    ReachableRecipientFactory(external_id="m1")
    resp = send(api, **body)
    assert resp.status_code == 400, resp.json()
    assert field in resp.json()
    assert not Message.objects.exists()


def test_unreachable_channel_is_refused(api):
    RecipientFactory(external_id="m1")  # no contact points at all
    resp = send(api)
    assert resp.status_code == 400
    assert "unreachable" in resp.json()["codes"]
    assert not Message.objects.exists()


def test_unknown_recipient_is_404(api):
    assert send(api, recipient="nobody").status_code == 404
    assert not Message.objects.exists()


def test_send_with_a_known_to_address_records_it(api):
    ReachableRecipientFactory(external_id="m1")
    resp = send(api, channel="sms", content={"body": "Your code is 1234"}, to="+14155550123")
    assert resp.status_code == 201, resp.json()
    assert Message.objects.get().to_address == "+14155550123"
