"""Receipts (POST messages/{id}/events/, POST webhooks/{provider}/) and the in-app inbox."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from orchestrator.models import Channel, Message, MessageStatus

from .factories import AcceptedMessageFactory

pytestmark = pytest.mark.django_db


def sent(channel=Channel.EMAIL, **kw):
    now = timezone.now()
    return AcceptedMessageFactory(
        channel=channel, status=MessageStatus.SENT, sent_at=now, provider_message_id="PM-1", **kw
    )


def events(api, message_id, **body):
    return api.post(f"/api/v1/messages/{message_id}/events/", body, format="json")


@pytest.mark.parametrize(
    "kind,status",
    [("delivered", "delivered"), ("opened", "opened"), ("seen", "opened"), ("clicked", "clicked")],
)
def test_an_engagement_receipt_moves_the_message_forward(api, kind, status):
    m = sent()
    resp = events(api, m.pk, type=kind)
    assert resp.status_code == 200 and resp.json()["applied"] is True
    m.refresh_from_db()
    assert m.status == status and getattr(m, f"{status}_at") is not None


def test_a_click_fills_the_open_and_delivery_times(api):
    m = sent()
    at = timezone.now() - timedelta(minutes=3)
    events(api, m.pk, type="clicked", occurred_at=at.isoformat())
    m.refresh_from_db()
    assert m.clicked_at == m.opened_at == m.delivered_at == at


def test_out_of_order_receipts_never_move_a_status_backwards(api):
    m = sent()
    t = timezone.now()
    events(api, m.pk, type="opened", occurred_at=t.isoformat())
    resp = events(api, m.pk, type="delivered", occurred_at=(t - timedelta(seconds=30)).isoformat())
    assert resp.status_code == 200 and resp.json()["applied"] is False
    m.refresh_from_db()
    assert m.status == "opened"
    assert events(api, m.pk, type="bounced").json()["status"] == "opened"


@pytest.mark.parametrize("kind", ["bounced", "failed"])
def test_a_bounce_fails_a_sent_message_with_the_reason(api, kind):
    m = sent()
    resp = events(api, m.pk, type=kind, detail="mailbox full")
    assert resp.json()["status"] == "failed"
    m.refresh_from_db()
    assert m.failed_at is not None and kind in m.last_error and "mailbox full" in m.last_error


def test_receipts_send_message_status_changed(api):
    from orchestrator.signals import message_status_changed

    seen = []

    def listener(sender, message, previous, **kw):
        seen.append((previous, message.status))

    message_status_changed.connect(listener)
    try:
        events(api, sent().pk, type="opened")
    finally:
        message_status_changed.disconnect(listener)
    assert seen == [("sent", "opened")]


def test_bad_receipts_are_400_or_404_and_write_nothing(api):
    m = sent()
    assert events(api, m.pk, type="exploded").status_code == 400
    assert events(api, m.pk, type="opened", occurred_at="yesterday").status_code == 400
    assert events(api, 999999, type="opened").status_code == 404
    m.refresh_from_db()
    assert m.status == "sent" and m.opened_at is None


def test_receipts_need_authentication(db):
    assert APIClient().post(f"/api/v1/messages/{sent().pk}/events/", {"type": "opened"}).status_code in (
        401,
        403,
    )


# --- webhooks ------------------------------------------------------------------------------------------


@pytest.fixture
def provider(settings) -> APIClient:
    """A provider posting receipts with its own shared secret (the only credential webhooks take)."""
    settings.CHANNELS = {
        **settings.CHANNELS,
        "WEBHOOK_TOKENS": {"twilio": "tw-secret", "generic": "tw-secret"},
    }
    client = APIClient()
    client.credentials(HTTP_X_WEBHOOK_TOKEN="tw-secret")
    return client


def test_webhooks_never_accept_an_api_or_service_token(api, settings):
    """A service token with every scope cannot forge a bounce through a provider webhook."""
    settings.CHANNELS = {**settings.CHANNELS, "WEBHOOK_TOKENS": {"generic": "s3cret"}}
    m = sent()
    body = {"message_id": m.pk, "type": "bounced"}
    response = api.post("/api/v1/webhooks/generic/", body, format="json")
    assert response.status_code == 403 and "shared secret" in response.json()["detail"]
    assert Message.objects.get(pk=m.pk).status == "sent"


def test_a_twilio_status_callback_delivers_by_provider_sid(provider):
    m = sent(channel=Channel.SMS, provider="twilio")
    resp = provider.post("/api/v1/webhooks/twilio/", {"MessageSid": "PM-1", "MessageStatus": "delivered"})
    assert resp.status_code == 200, resp.json()
    assert Message.objects.get(pk=m.pk).status == "delivered"


def test_twilio_undelivered_fails_with_the_error_code(provider):
    m = sent(channel=Channel.SMS, provider="twilio")
    provider.post(
        "/api/v1/webhooks/twilio/",
        {"MessageSid": "PM-1", "MessageStatus": "undelivered", "ErrorCode": "30003"},
    )
    m.refresh_from_db()
    assert m.status == "failed" and "30003" in m.last_error


def test_twilio_in_flight_statuses_are_acknowledged_and_ignored(provider):
    m = sent(channel=Channel.SMS, provider="twilio")
    resp = provider.post("/api/v1/webhooks/twilio/", {"MessageSid": "PM-1", "MessageStatus": "sending"})
    assert resp.status_code == 200 and resp.json()["results"] == []
    assert Message.objects.get(pk=m.pk).status == "sent"


def test_the_generic_webhook_applies_several_receipts_together(provider):
    a, b = sent(), sent()
    body = {"receipts": [{"message_id": a.pk, "type": "opened"}, {"message_id": b.pk, "type": "clicked"}]}
    resp = provider.post("/api/v1/webhooks/generic/", body, format="json")
    assert resp.status_code == 200
    assert [r["status"] for r in resp.json()["results"]] == ["opened", "clicked"]


def test_an_unknown_provider_is_404(provider):
    assert provider.post("/api/v1/webhooks/carrier-pigeon/", {}, format="json").status_code == 404


@pytest.mark.parametrize(
    "name,body,content_type",
    [
        ("generic", b"{not json", "application/json"),
        ("generic", b"[1, 2]", "application/json"),
        ("generic", b'{"type": "opened"}', "application/json"),
        ("generic", b'{"message_id": "abc", "type": "opened"}', "application/json"),
        ("generic", b'{"message_id": 1, "type": "opened", "occurred_at": "soon"}', "application/json"),
        ("generic", b'"just a string"', "application/json"),
        ("generic", b"null", "application/json"),
        ("twilio", b"MessageSid=SM1", "application/x-www-form-urlencoded"),
        ("twilio", b"MessageSid=SM1&MessageStatus=exploded", "application/x-www-form-urlencoded"),
        ("twilio", b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
        ("twilio", b"<xml/>", "text/xml"),
    ],
)
def test_a_malformed_webhook_body_is_400_never_500(provider, name, body, content_type):
    m = sent()
    resp = provider.generic("POST", f"/api/v1/webhooks/{name}/", body, content_type=content_type)
    assert resp.status_code in (400, 415), resp.content
    assert Message.objects.get(pk=m.pk).status == "sent"


def test_a_receipt_for_an_unknown_message_is_404_and_applies_nothing(provider):
    a = sent()
    body = {"receipts": [{"message_id": a.pk, "type": "opened"}, {"message_id": 999999, "type": "opened"}]}
    assert provider.post("/api/v1/webhooks/generic/", body, format="json").status_code == 404
    assert Message.objects.get(pk=a.pk).status == "sent"
    twilio = {"MessageSid": "SM-unknown", "MessageStatus": "delivered"}
    assert provider.post("/api/v1/webhooks/twilio/", twilio).status_code == 404


def test_a_provider_may_post_with_its_shared_secret_instead_of_a_token(settings):
    settings.CHANNELS = {**settings.CHANNELS, "WEBHOOK_TOKENS": {"twilio": "s3cret"}}
    sent(channel=Channel.SMS, provider="twilio")
    body = {"MessageSid": "PM-1", "MessageStatus": "delivered"}
    client = APIClient()
    assert client.post("/api/v1/webhooks/twilio/", body).status_code in (401, 403)
    assert client.post("/api/v1/webhooks/twilio/?token=wrong", body).status_code in (401, 403)
    assert client.post("/api/v1/webhooks/twilio/?token=s3cret", body).status_code == 200


# --- the in-app inbox ----------------------------------------------------------------------------------


def in_app(**kw):
    return sent(channel=Channel.IN_APP, **kw)


def test_the_inbox_shows_waiting_messages_and_marks_them_delivered(api):
    m = in_app()
    other = sent()  # email: not in the inbox
    resp = api.get(f"/api/v1/recipients/{m.recipient.external_id}/inbox/")
    assert resp.status_code == 200
    [item] = resp.json()
    assert item["id"] == m.pk and item["action_url"] == "app://cart" and item["title"]
    m.refresh_from_db()
    assert m.status == "delivered" and m.delivered_at is not None
    assert m.recipient.__class__.objects.get(pk=m.recipient_id).last_seen_at is not None
    assert api.get(f"/api/v1/recipients/{m.recipient.external_id}/inbox/").json() == []
    assert Message.objects.get(pk=other.pk).status == "sent"


def test_expired_inbox_messages_are_not_shown(api):
    m = in_app(expires_at=timezone.now() - timedelta(minutes=1))
    assert api.get(f"/api/v1/recipients/{m.recipient.external_id}/inbox/").json() == []
    assert Message.objects.get(pk=m.pk).status == "expired"


def test_the_inbox_of_an_unknown_recipient_is_404(api):
    assert api.get("/api/v1/recipients/nobody/inbox/").status_code == 404


def test_an_app_open_event_delivers_the_inbox(api):
    m = in_app()
    resp = api.post(
        "/api/v1/events/", {"recipient": m.recipient.external_id, "name": "app_open"}, format="json"
    )
    assert resp.status_code == 201
    assert Message.objects.get(pk=m.pk).status == "delivered"
    api.post("/api/v1/events/", {"recipient": m.recipient.external_id, "name": "purchase"}, format="json")
    assert Message.objects.get(pk=m.pk).status == "delivered"
