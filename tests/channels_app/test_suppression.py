"""Suppression: hard bounces, complaints and dead push tokens make a contact point undeliverable; the
pipeline refuses (or reroutes `auto`) with the reason; soft bounces count; the admin clears it. ESP events
arrive through django-anymail's tracking webhooks (its test backend sends, Postmark-shaped payloads post)."""

import base64
import json

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from channels_app.delivery import message_deliver
from orchestrator.consent import contact_point_clear, contact_point_soft_bounce
from orchestrator.models import ChangeKind, ContactPoint, Message, PreferenceChange
from orchestrator.pipeline import SendRefused, message_send
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db

SECRET = "hook:s3cret"
RECEIPT = {"subject": "Your receipt", "body": "Thanks for your order."}
NEWS = {"subject": "New this week", "body": "A few things we think you will like."}


@pytest.fixture(autouse=True)
def anymail_test_backend(settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}


def send_email(recipient, purpose="transactional", content=RECEIPT, capture=None):
    with capture(execute=True):
        return message_send(recipient=recipient, channel="email", purpose=purpose, content=content)


def post_postmark(events, secret=SECRET):
    auth = base64.b64encode(secret.encode()).decode()
    return Client().post(
        "/anymail/postmark/tracking/",
        data=json.dumps(events[0] if len(events) == 1 else events),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {auth}",
    )


def email_point(recipient):
    return ContactPoint.objects.get(recipient=recipient, channel="email")


def test_an_esp_hard_bounce_fails_the_message_and_makes_the_address_undeliverable(
    django_capture_on_commit_callbacks,
):
    r = ReachableRecipientFactory()
    m = send_email(r, capture=django_capture_on_commit_callbacks)
    m.refresh_from_db()
    assert m.status == "sent" and m.provider_message_id  # the anymail test backend's id
    answer = post_postmark(
        [
            {
                "RecordType": "Bounce",
                "Type": "HardBounce",
                "ID": 42,
                "MessageID": m.provider_message_id,
                "Email": email_point(r).address,
                "BouncedAt": "2026-11-27T10:00:00Z",
                "Description": "The server was unable to deliver your message",
                "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            }
        ]
    )
    assert answer.status_code == 200
    m.refresh_from_db()
    cp = email_point(r)
    assert m.status == "failed" and "550 5.1.1" in m.last_error
    assert cp.undeliverable_at is not None and "hard bounce" in cp.undeliverable_reason
    change = PreferenceChange.objects.get()
    assert (change.kind, change.source, change.message_id) == (ChangeKind.HARD_BOUNCE, "provider", m.pk)

    with pytest.raises(SendRefused) as refused:
        message_send(recipient=r, channel="email", purpose="transactional", content=RECEIPT)
    [error] = refused.value.errors["channel"]
    assert (
        error["code"] == "undeliverable" and "550 5.1.1" in error["detail"] and cp.address in error["detail"]
    )


def test_auto_reroutes_around_an_undeliverable_address_and_says_why(django_capture_on_commit_callbacks):
    r = ReachableRecipientFactory()
    ContactPoint.objects.filter(recipient=r, channel="email").update(
        undeliverable_at=timezone.now(), undeliverable_reason="hard bounce (550 user unknown)"
    )
    m = message_send(recipient=r, channel="auto", purpose="transactional", content=RECEIPT)
    assert m.channel != "email" and "not email" in m.channel_reason and "550 user unknown" in m.channel_reason


def test_a_complaint_suppresses_the_address_and_is_recorded(django_capture_on_commit_callbacks):
    r = ReachableRecipientFactory()
    m = send_email(r, "promotional", NEWS, capture=django_capture_on_commit_callbacks)
    m.refresh_from_db()
    answer = post_postmark(
        [
            {
                "RecordType": "SpamComplaint",
                "Type": "SpamComplaint",
                "ID": 7,
                "MessageID": m.provider_message_id,
                "Email": email_point(r).address,
                "BouncedAt": "2026-11-27T10:00:00Z",
            }
        ]
    )
    assert answer.status_code == 200
    assert "spam complaint" in email_point(r).undeliverable_reason
    assert PreferenceChange.objects.get().kind == ChangeKind.COMPLAINT


def test_delivered_and_opened_events_become_receipts(django_capture_on_commit_callbacks):
    r = ReachableRecipientFactory()
    m = send_email(r, capture=django_capture_on_commit_callbacks)
    m.refresh_from_db()
    address = email_point(r).address
    events = [
        {
            "RecordType": "Delivery",
            "MessageID": m.provider_message_id,
            "Recipient": address,
            "DeliveredAt": "2026-11-27T10:00:00Z",
            "Details": "Test delivery",
        },
        {
            "RecordType": "Open",
            "MessageID": m.provider_message_id,
            "Recipient": address,
            "ReceivedAt": "2026-11-27T10:05:00Z",
        },
    ]
    for event in events:
        assert post_postmark([event]).status_code == 200
    m.refresh_from_db()
    assert m.status == "opened" and m.delivered_at.isoformat().startswith("2026-11-27T10:00")


def test_soft_bounces_count_and_suppress_after_the_configured_number_in_a_row(
    settings, django_capture_on_commit_callbacks
):
    settings.CONSENT = {**settings.CONSENT, "SOFT_BOUNCE_LIMIT": 3}
    r = ReachableRecipientFactory()
    m = send_email(r, capture=django_capture_on_commit_callbacks)
    m.refresh_from_db()
    address = email_point(r).address
    transient = {
        "RecordType": "Bounce",
        "Type": "Transient",
        "ID": 1,
        "MessageID": m.provider_message_id,
        "Email": address,
        "BouncedAt": "2026-11-27T10:00:00Z",
        "Details": "mailbox full",
    }
    post_postmark([transient])
    post_postmark([transient])
    assert email_point(r).soft_bounces == 2 and email_point(r).undeliverable_at is None
    # A delivery in between starts the count again: "in a row".
    post_postmark(
        [
            {
                "RecordType": "Delivery",
                "MessageID": m.provider_message_id,
                "Recipient": address,
                "DeliveredAt": "2026-11-27T10:00:00Z",
            }
        ]
    )
    assert email_point(r).soft_bounces == 0
    for _ in range(3):
        post_postmark([transient])
    cp = email_point(r)
    assert cp.undeliverable_at is not None and cp.undeliverable_reason.startswith("3 soft bounces in a row")
    assert PreferenceChange.objects.get().kind == ChangeKind.SOFT_BOUNCES


def test_an_anymail_webhook_with_bad_auth_is_403_and_writes_nothing(django_capture_on_commit_callbacks):
    r = ReachableRecipientFactory()
    m = send_email(r, capture=django_capture_on_commit_callbacks)
    m.refresh_from_db()
    bounce = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "ID": 1,
        "MessageID": m.provider_message_id,
        "Email": email_point(r).address,
        "BouncedAt": "2026-11-27T10:00:00Z",
    }
    for secret in ("hook:wrong", "nobody:"):
        answer = post_postmark([bounce], secret=secret)
        assert answer.status_code == 403 and answer.json()["code"] == "bad_signature"
    no_auth = Client().post(
        "/anymail/postmark/tracking/", json.dumps(bounce), content_type="application/json"
    )
    assert no_auth.status_code == 403
    assert email_point(r).undeliverable_at is None and not PreferenceChange.objects.exists()
    m.refresh_from_db()
    assert m.status == "sent"


def test_a_malformed_anymail_body_is_a_400_not_a_500():
    auth = base64.b64encode(SECRET.encode()).decode()
    answer = Client().post(
        "/anymail/postmark/tracking/",
        "[1, 2",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {auth}",
    )
    assert answer.status_code == 400


def test_the_anymail_test_backend_received_our_ids_as_metadata(django_capture_on_commit_callbacks):
    r = ReachableRecipientFactory()
    m = send_email(r, capture=django_capture_on_commit_callbacks)
    [sent] = mail.outbox
    assert sent.anymail_test_params["metadata"] == {"orchestrator_message_id": str(m.pk)}


def test_an_smtp_550_at_hand_off_suppresses_the_address(settings):
    from tests.channels_app.servers import smtp_server

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    with smtp_server(refuse="550 5.1.1 No such user") as (controller, _handler):
        settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
        r = ReachableRecipientFactory()
        m = message_send(recipient=r, channel="email", purpose="transactional", content=RECEIPT)
        message_deliver(message_id=m.pk)
    m.refresh_from_db()
    cp = email_point(r)
    assert m.status == "failed" and cp.undeliverable_at is not None and "550" in cp.undeliverable_reason


def test_the_admin_clears_a_suppression_and_the_address_is_reachable_again(admin_client):
    r = ReachableRecipientFactory()
    cp = email_point(r)
    ContactPoint.objects.filter(pk=cp.pk).update(
        undeliverable_at=timezone.now(), undeliverable_reason="hard bounce"
    )
    page = admin_client.get("/admin/orchestrator/contactpoint/?deliverable=no")
    assert page.status_code == 200 and cp.address in page.content.decode()
    answer = admin_client.post(
        "/admin/orchestrator/contactpoint/", {"action": "clear_suppression", "_selected_action": [cp.pk]}
    )
    assert answer.status_code == 302
    cp.refresh_from_db()
    assert cp.undeliverable_at is None and cp.undeliverable_reason == ""
    change = PreferenceChange.objects.get()
    assert (change.kind, change.source) == (ChangeKind.CLEARED, "admin")
    assert (
        message_send(recipient=r, channel="email", purpose="transactional", content=RECEIPT).status
        == "accepted"
    )


def test_clearing_a_point_that_is_fine_records_nothing():
    r = ReachableRecipientFactory()
    assert contact_point_clear(contact_point=email_point(r), by="ops", at=timezone.now()) is False
    assert not PreferenceChange.objects.exists()


def test_a_soft_bounce_for_an_unknown_address_changes_nothing():
    assert (
        contact_point_soft_bounce(
            channel="email", address="nobody@example.com", reason="x", at=timezone.now()
        )
        == 0
    )
    assert not Message.objects.exists() and not PreferenceChange.objects.exists()


def test_the_list_unsubscribe_mailto_arriving_inbound_opts_out_like_the_link():
    from anymail.inbound import AnymailInboundMessage
    from anymail.signals import AnymailInboundEvent, inbound

    from orchestrator.preferences import list_unsubscribe_headers

    r = ReachableRecipientFactory()
    m = Message.objects.create(
        recipient=r, channel="email", purpose="promotional", content=NEWS, status="sent"
    )
    header = list_unsubscribe_headers(
        recipient_id=r.pk, message_id=m.pk, channel="email", purpose="promotional"
    )
    from urllib.parse import unquote

    subject = unquote(header["List-Unsubscribe"].split("subject=")[1].rstrip(">"))
    for text in ("hello there", "unsubscribe not-a-token", subject):
        event = AnymailInboundEvent(
            event_type="inbound", message=AnymailInboundMessage.construct(subject=text)
        )
        inbound.send(sender=object, event=event, esp_name="Postmark")
    change = PreferenceChange.objects.get()
    assert (change.purpose, change.source, change.message_id) == ("promotional", "link", m.pk)
    assert r.preferences.get().opted_in is False
