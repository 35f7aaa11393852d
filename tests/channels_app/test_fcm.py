"""The FCM HTTP v1 backend against a fake FCM (and OAuth token endpoint) on loopback: success, 4xx
(a dead token is suppressed), 5xx and timeouts (transient)."""

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channels_app.backends import fcm
from channels_app.delivery import message_deliver
from orchestrator.models import ChangeKind, Channel, ContactPoint, PreferenceChange
from orchestrator.pipeline import SendRefused, message_send

from .factories import AcceptedMessageFactory
from .servers import programmable_server

pytestmark = pytest.mark.django_db

PUSH = {"title": "Your order shipped", "body": "Track it in the app.", "action_url": "app://orders"}


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class FakeFcm:
    """Answers to messages:send, in order (then success); the token endpoint always works."""

    def __init__(self):
        self.script: list[tuple[int, dict, float]] = []
        self.tokens = 0

    def __call__(self, path, headers, raw):
        if path == "/token":
            self.tokens += 1
            return 200, {"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"}, 0
        if self.script:
            return self.script.pop(0)
        return 200, {"name": "projects/demo-proj/messages/0:1234"}, 0


@pytest.fixture
def fake(settings, private_key_pem):
    answers = FakeFcm()
    fcm._sessions.clear()
    with programmable_server(answers) as server:
        account = {
            "type": "service_account",
            "project_id": "demo-proj",
            "private_key_id": "k1",
            "private_key": private_key_pem,
            "client_email": "orchestrator@demo-proj.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"{server.url}/token",
        }
        settings.CHANNELS = {
            **settings.CHANNELS,
            "BACKENDS": {**settings.CHANNELS["BACKENDS"], "push": "channels_app.backends.fcm.FcmBackend"},
            "FCM": {
                "SERVICE_ACCOUNT": json.dumps(account),
                "PROJECT_ID": "",
                "BASE_URL": server.url,
                "TIMEOUT": 0.5,
            },
            "RETRY_MAX_ATTEMPTS": 3,
        }
        yield answers, server
    fcm._sessions.clear()


def push_message():
    return AcceptedMessageFactory(channel=Channel.PUSH, content=dict(PUSH))


def sends(server):
    return [r for r in server.requests if r["path"].endswith("messages:send")]


def test_success_records_the_fcm_name_and_authorises_with_the_service_account(fake):
    answers, server = fake
    first, second = push_message(), push_message()
    message_deliver(message_id=first.pk)
    message_deliver(message_id=second.pk)
    first.refresh_from_db()
    assert (first.status, first.provider, first.provider_message_id) == (
        "sent",
        "fcm",
        "projects/demo-proj/messages/0:1234",
    )
    [one, _two] = sends(server)
    assert one["path"] == "/v1/projects/demo-proj/messages:send"
    assert one["headers"]["authorization"] == "Bearer ya29.test-token"
    body = json.loads(one["raw"])["message"]
    assert body["token"] == ContactPoint.objects.get(recipient=first.recipient, channel="push").address
    assert body["notification"] == {"title": PUSH["title"], "body": PUSH["body"]}
    assert body["data"] == {"message_id": str(first.pk), "action_url": "app://orders"}
    # Our message id as the collapse key everywhere: a resend replaces the first instead of showing twice.
    assert (
        body["android"]["collapse_key"]
        == body["apns"]["headers"]["apns-collapse-id"]
        == f"orchestrator-message-{first.pk}"
    )
    assert answers.tokens == 1  # the OAuth token is reused


def test_an_unregistered_token_fails_the_message_and_suppresses_the_token(fake):
    answers, _server = fake
    answers.script.append(
        (
            404,
            {
                "error": {
                    "code": 404,
                    "status": "NOT_FOUND",
                    "message": "Requested entity was not found.",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                            "errorCode": "UNREGISTERED",
                        }
                    ],
                }
            },
            0,
        )
    )
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    point = ContactPoint.objects.get(recipient=m.recipient, channel="push")
    assert m.status == "failed" and "UNREGISTERED" in m.last_error
    assert point.undeliverable_at is not None and "UNREGISTERED" in point.undeliverable_reason
    change = PreferenceChange.objects.get()
    assert (change.kind, change.message_id) == (ChangeKind.TOKEN_LOST, m.pk)
    with pytest.raises(SendRefused) as refused:
        message_send(recipient=m.recipient, channel="push", purpose="transactional", content=PUSH)
    assert refused.value.errors["channel"][0]["code"] == "undeliverable"


def test_an_invalid_registration_token_is_suppressed_too(fake):
    answers, _server = fake
    answers.script.append(
        (
            400,
            {
                "error": {
                    "code": 400,
                    "status": "INVALID_ARGUMENT",
                    "message": "The registration token is not a valid FCM registration token",
                }
            },
            0,
        )
    )
    m = push_message()
    message_deliver(message_id=m.pk)
    assert ContactPoint.objects.get(recipient=m.recipient, channel="push").undeliverable_at is not None


def test_another_4xx_fails_the_message_but_keeps_the_token(fake):
    answers, _server = fake
    answers.script.append(
        (400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid JSON payload"}}, 0)
    )
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "failed" and "INVALID_ARGUMENT" in m.last_error
    assert ContactPoint.objects.get(recipient=m.recipient, channel="push").undeliverable_at is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"error": {"status": "INTERNAL"}}),
        (503, {"error": {"status": "UNAVAILABLE"}}),
        (429, {"error": {"status": "RESOURCE_EXHAUSTED"}}),
    ],
)
def test_5xx_and_429_are_transient_and_retried(fake, status, body):
    answers, _server = fake
    answers.script.append((status, body, 0))
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "accepted" and f"HTTP {status}" in m.last_error and m.next_attempt_at is not None


def test_a_timeout_is_transient(fake):
    answers, _server = fake
    answers.script.append((200, {"name": "late"}, 1.5))
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "accepted" and "no answer within 0.5 s" in m.last_error


def test_without_a_service_account_nothing_is_lost(settings, fake):
    settings.CHANNELS = {**settings.CHANNELS, "FCM": {**settings.CHANNELS["FCM"], "SERVICE_ACCOUNT": ""}}
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "accepted" and "FCM_SERVICE_ACCOUNT" in m.last_error
