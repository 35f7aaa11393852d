"""Each backend against something real: Django's email backends and an SMTP server on loopback, a
Twilio-style HTTP API on loopback (200, 429, 500, timeout, 400), Web Push to a loopback endpoint."""

import base64
import email
import json
import os
from datetime import timedelta

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core import mail
from django.utils import timezone

from channels_app.backends import Outgoing, backend_for_channel, push, sms
from channels_app.backends.email import DjangoEmailBackend
from channels_app.backends.in_app import InboxBackend
from channels_app.backends.push import LocmemPushBackend, WebPushBackend
from channels_app.backends.sms import LocmemSmsBackend, TwilioSmsBackend
from channels_app.delivery import message_deliver
from orchestrator.models import Channel, Message

from .factories import AcceptedMessageFactory
from .servers import free_port, http_server, smtp_server

EMAIL = {
    "subject": "Your receipt",
    "body": "Thanks for your order.",
    "action_url": "https://shop.example/o/7",
}


def outgoing(channel="sms", to="+14155550123", content=None, **kw) -> Outgoing:
    content = content or {"body": "Your code is 428193."}
    return Outgoing(
        message_id=42, channel=channel, purpose="transactional", recipient="u1", to=to, content=content, **kw
    )


# --- email ---------------------------------------------------------------------------------------------


def test_email_goes_through_djangos_locmem_backend(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    result = DjangoEmailBackend().send(outgoing("email", "ada@example.com", EMAIL))
    assert result.outcome == "success"
    [sent] = mail.outbox
    assert (sent.subject, sent.to) == ("Your receipt", ["ada@example.com"])
    assert "https://shop.example/o/7" in sent.body
    assert (
        result.provider_message_id
        == sent.extra_headers["Message-ID"]
        == "<orchestrator-message-42@localhost>"
    )
    assert DjangoEmailBackend().name == "email:locmem"


@pytest.mark.django_db
def test_email_is_delivered_through_a_real_smtp_server_and_read_back(settings):
    with smtp_server() as (controller, handler):
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
        message = AcceptedMessageFactory(channel=Channel.EMAIL, content=EMAIL)
        message_deliver(message_id=message.pk)
    message.refresh_from_db()
    assert message.status == "sent" and message.provider == "email:smtp"
    [envelope] = handler.envelopes
    assert envelope.rcpt_tos == [f"{message.recipient.external_id}@example.com"]
    parsed = email.message_from_bytes(envelope.content)
    assert parsed["Subject"] == "Your receipt"
    assert parsed["X-Orchestrator-Message-Id"] == str(message.pk)
    assert parsed["Message-ID"] == message.provider_message_id
    assert "Thanks for your order." in parsed.get_payload(decode=True).decode()


@pytest.mark.parametrize(
    "reply,outcome", [("550 5.1.1 No such user", "permanent"), ("451 4.3.0 Try again later", "transient")]
)
def test_smtp_refusals_are_classified_by_their_code(settings, reply, outcome):
    with smtp_server(refuse=reply) as (controller, _):
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
        result = DjangoEmailBackend().send(outgoing("email", "nobody@example.com", EMAIL))
    assert result.outcome == outcome and reply.split()[0] in result.summary


def test_an_smtp_server_that_is_down_is_transient(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    result = DjangoEmailBackend().send(outgoing("email", "ada@example.com", EMAIL))
    assert result.outcome == "transient" and "ConnectionRefused" in result.summary


# --- SMS -----------------------------------------------------------------------------------------------


def test_locmem_sms_keeps_an_outbox():
    sms.outbox.clear()
    result = LocmemSmsBackend().send(outgoing())
    assert result.outcome == "success" and sms.outbox[0]["sid"] == result.provider_message_id
    assert sms.outbox[0]["to"] == "+14155550123" and sms.outbox[0]["body"] == "Your code is 428193."


@pytest.fixture
def twilio(settings):
    with http_server() as server:

        def configure(mode: str, timeout: float = 5):
            settings.CHANNELS = {
                **settings.CHANNELS,
                "SMS_HTTP": {
                    "BASE_URL": f"{server.url}/{mode}",
                    "ACCOUNT_SID": "AC123",
                    "AUTH_TOKEN": "secret",
                    "FROM": "+15005550006",
                    "STATUS_CALLBACK": "",
                    "TIMEOUT": timeout,
                },
            }
            return TwilioSmsBackend()

        configure.server = server
        yield configure


def test_twilio_200_is_success_with_the_sid_and_an_idempotency_token(twilio):
    result = twilio("ok").send(outgoing())
    assert result.outcome == "success" and result.provider_message_id.startswith("SM")
    [req] = twilio.server.requests
    assert req["path"] == "/ok/2010-04-01/Accounts/AC123/Messages.json"
    assert req["form"] == {"To": ["+14155550123"], "From": ["+15005550006"], "Body": ["Your code is 428193."]}
    assert req["headers"]["i-twilio-idempotency-token"] == "orchestrator-message-42"
    assert req["headers"]["authorization"] == "Basic " + base64.b64encode(b"AC123:secret").decode()


@pytest.mark.parametrize("mode,outcome,text", [("busy", "transient", "429"), ("broken", "transient", "500")])
def test_twilio_429_and_5xx_are_transient(twilio, mode, outcome, text):
    result = twilio(mode).send(outgoing())
    assert result.outcome == outcome and text in result.summary


def test_twilio_timeout_is_transient(twilio):
    result = twilio("slow", timeout=0.3).send(outgoing())
    assert result.outcome == "transient" and "no answer within 0.3 s" in result.summary


def test_twilio_4xx_is_permanent_with_the_providers_reason(twilio):
    result = twilio("bad").send(outgoing())
    assert result.outcome == "permanent" and "21211" in result.summary and "Invalid 'To'" in result.summary


def test_twilio_unreachable_is_transient(settings):
    settings.CHANNELS = {
        **settings.CHANNELS,
        "SMS_HTTP": {
            **settings.CHANNELS["SMS_HTTP"],
            "BASE_URL": f"http://127.0.0.1:{free_port()}",
            "TIMEOUT": 2,
        },
    }
    assert TwilioSmsBackend().send(outgoing()).outcome == "transient"


@pytest.mark.django_db
def test_twilio_backend_end_to_end_records_the_sid(twilio, settings):
    twilio("ok")
    settings.CHANNELS = {
        **settings.CHANNELS,
        "BACKENDS": {**settings.CHANNELS["BACKENDS"], "sms": "channels_app.backends.sms.TwilioSmsBackend"},
    }
    message = AcceptedMessageFactory(channel=Channel.SMS)
    message_deliver(message_id=message.pk)
    message.refresh_from_db()
    assert (
        message.status == "sent"
        and message.provider == "twilio"
        and message.provider_message_id.startswith("SM")
    )


# --- push ----------------------------------------------------------------------------------------------


def test_locmem_push_keeps_an_outbox():
    push.outbox.clear()
    content = {"title": "Driver", "body": "Here", "action_url": "app://ride"}
    result = LocmemPushBackend().send(outgoing("push", "tok-1", content))
    assert result.outcome == "success"
    expected = {"to": "tok-1", "title": "Driver", "action_url": "app://ride", "message_id": 42}
    assert expected.items() <= push.outbox[0].items()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def webpush_setup(settings):
    """A browser subscription (its own keys) whose endpoint is a loopback server, and VAPID keys."""
    receiver_key = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    vapid_key = ec.generate_private_key(ec.SECP256R1())
    settings.CHANNELS = {
        **settings.CHANNELS,
        "WEBPUSH": {
            "VAPID_PRIVATE_KEY": _b64(vapid_key.private_numbers().private_value.to_bytes(32, "big")),
            "VAPID_SUBJECT": "mailto:ops@example.com",
            "TIMEOUT": 5,
        },
    }
    with http_server() as server:

        def subscription(mode: str) -> str:
            public = receiver_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
            return json.dumps(
                {
                    "endpoint": f"{server.url}/{mode}/push/abc",
                    "keys": {"p256dh": _b64(public), "auth": _b64(auth)},
                }
            )

        yield server, subscription, receiver_key, auth


def test_web_push_delivers_an_encrypted_payload_the_browser_can_read(webpush_setup):
    server, subscription, receiver_key, auth = webpush_setup
    content = {"title": "Driver", "body": "Here", "action_url": "app://ride"}
    expires = timezone.now() + timedelta(minutes=10)
    result = WebPushBackend().send(outgoing("push", subscription("ok"), content, expires_at=expires))
    assert result.outcome == "success" and result.provider_message_id.startswith(server.url)
    [req] = server.requests
    assert 590 <= int(req["headers"]["ttl"]) <= 600  # the push service drops it when the message expires
    assert req["headers"]["authorization"].startswith("vapid t=")
    plain = http_ece.decrypt(req["raw"], private_key=receiver_key, auth_secret=auth, version="aes128gcm")
    assert json.loads(plain) == {**content, "message_id": 42}


@pytest.mark.parametrize(
    "mode,outcome", [("gone", "permanent"), ("busy", "transient"), ("broken", "transient")]
)
def test_web_push_errors_are_classified(webpush_setup, mode, outcome):
    _, subscription, *_ = webpush_setup
    assert WebPushBackend().send(outgoing("push", subscription(mode), {"body": "b"})).outcome == outcome


def test_web_push_with_a_token_that_is_not_a_subscription_is_permanent(webpush_setup):
    result = WebPushBackend().send(outgoing("push", "not-json", {"body": "b"}))
    assert result.outcome == "permanent" and "subscription" in result.summary


# --- in-app and configuration ---------------------------------------------------------------------------


def test_inbox_backend_queues_without_a_network_call():
    result = InboxBackend().send(outgoing("in_app", "", {"body": "b", "action_url": "app://x"}))
    assert (result.outcome, result.provider_message_id) == ("success", "inbox-42")


def test_backends_are_chosen_by_dotted_path_per_channel(settings):
    assert isinstance(backend_for_channel(channel="sms"), LocmemSmsBackend)
    settings.CHANNELS = {
        **settings.CHANNELS,
        "BACKENDS": {**settings.CHANNELS["BACKENDS"], "sms": "channels_app.backends.sms.TwilioSmsBackend"},
    }
    assert isinstance(backend_for_channel(channel="sms"), TwilioSmsBackend)


def test_demo_defaults_keep_everything_on_this_machine():
    from orchestrator import settings as shipped

    assert shipped.CHANNELS["BACKENDS"]["sms"].endswith("Locmem" + "SmsBackend")
    assert shipped.CHANNELS["BACKENDS"]["push"].endswith("LocmemPushBackend")
    assert shipped.EMAIL_BACKEND.endswith(("console.EmailBackend", "locmem.EmailBackend")) or os.environ.get(
        "EMAIL_BACKEND"
    )


@pytest.mark.django_db
def test_in_app_delivery_puts_it_in_the_inbox_as_sent():
    message = AcceptedMessageFactory(channel=Channel.IN_APP)
    message_deliver(message_id=message.pk)
    assert Message.objects.get(pk=message.pk).status == "sent"


@pytest.mark.parametrize(
    ("purpose", "carries"),
    [("engagement", True), ("promotional", True), ("transactional", False), ("alert", False)],
)
def test_only_engagement_and_promotional_email_carries_one_click_unsubscribe(purpose, carries, settings):
    from orchestrator.preferences import preference_token_read

    settings.PUBLIC_BASE_URL = "https://messages.example.com"
    message = DjangoEmailBackend().build(
        Outgoing(
            message_id=42,
            channel="email",
            purpose=purpose,
            recipient="u1",
            to="u1@example.com",
            content=EMAIL,
            recipient_id=7,
        )
    )
    headers = message.extra_headers
    assert ("List-Unsubscribe" in headers) is carries
    assert ("List-Unsubscribe-Post" in headers) is carries
    if carries:
        url = headers["List-Unsubscribe"].split(">")[0][1:]
        claims = preference_token_read(url.split("/preferences/")[1].split("/")[0])
        assert (claims.recipient_id, claims.message_id, claims.purpose) == (7, 42, purpose)
