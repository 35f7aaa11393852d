"""The APNs backend against a fake APNs on loopback speaking HTTP/2 (h2c, prior knowledge) that checks
the ES256 provider token: success, dead tokens (suppressed), an expired provider token (reissued once),
other 4xx, 5xx, 429 and timeouts (transient: a retry, or the next provider)."""

import base64
import json
import threading
import uuid

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from django.utils import timezone

from channels_app.backends import apns, push
from channels_app.backends.apns import ApnsBackend
from channels_app.backends.base import Outgoing
from channels_app.delivery import message_deliver
from channels_app.models import DeliveryAttempt
from orchestrator.models import ChangeKind, Channel, ContactPoint, PreferenceChange
from orchestrator.pipeline import SendRefused, message_send
from tests.orchestrator.factories import ReachableRecipientFactory

from .factories import AcceptedMessageFactory
from .h2server import h2_server

pytestmark = pytest.mark.django_db

PUSH = {"title": "Your order shipped", "body": "Track it in the app.", "action_url": "app://orders"}
KEY_ID, TEAM_ID, TOPIC = "ABC123DEFG", "DEF123GHIJ", "com.example.app"
APNS = "channels_app.backends.apns.ApnsBackend"


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def key_pem(signing_key) -> str:
    return signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeApns:
    """Checks the provider token's ES256 signature, key id and team; answers from `script` in order
    (then success, echoing apns-id). "expire" refuses the token it sees (and only that one) from then on."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey):
        self.public_key = public_key
        self.script: list[tuple[int, str, float] | str] = []
        self.tokens: list[str] = []  # every distinct valid token seen, in order
        self.expired: set[str] = set()

    def verify(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        header, claims, signature = token.split(".")
        raw = _unb64(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        try:
            self.public_key.verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        head, body = json.loads(_unb64(header)), json.loads(_unb64(claims))
        return (scheme, head, body["iss"], type(body["iat"])) == (
            "bearer",
            {"alg": "ES256", "kid": KEY_ID},
            TEAM_ID,
            int,
        )

    def __call__(self, request):
        token = request["headers"].get("authorization", "")
        if not self.verify(token):
            return 403, {}, json.dumps({"reason": "InvalidProviderToken"}).encode(), 0
        if token not in self.tokens:
            self.tokens.append(token)
        if self.script and self.script[0] == "expire":
            self.script.pop(0)
            self.expired.add(token)
        if token in self.expired:
            return 403, {}, json.dumps({"reason": "ExpiredProviderToken"}).encode(), 0
        if self.script:
            status, reason, delay = self.script.pop(0)
            body = {"reason": reason}
            if status == 410:
                body["timestamp"] = 1700000000000
            return status, {"apns-id": request["headers"]["apns-id"]}, json.dumps(body).encode(), delay
        return 200, {"apns-id": request["headers"]["apns-id"]}, b"", 0


def apns_settings(settings, url, key_pem, **overrides):
    return {
        "KEY": key_pem,
        "KEY_ID": KEY_ID,
        "TEAM_ID": TEAM_ID,
        "TOPIC": TOPIC,
        "USE_SANDBOX": False,
        "BASE_URL": url,
        "TIMEOUT": 0.5,
        **overrides,
    }


def clear_caches():
    apns._tokens.clear()
    apns._keys.clear()
    for client in apns._clients.values():
        client.close()
    apns._clients.clear()


@pytest.fixture
def fake(settings, signing_key, key_pem):
    answers = FakeApns(signing_key.public_key())
    clear_caches()
    with h2_server(answers) as server:
        settings.CHANNELS = {
            **settings.CHANNELS,
            "BACKENDS": {**settings.CHANNELS["BACKENDS"], "push": APNS},
            "APNS": apns_settings(settings, server.url, key_pem),
            "RETRY_MAX_ATTEMPTS": 3,
        }
        yield answers, server
    clear_caches()


def push_message(**kwargs):
    return AcceptedMessageFactory(channel=Channel.PUSH, content=dict(PUSH), **kwargs)


def point(message):
    return ContactPoint.objects.get(recipient=message.recipient, channel="push")


def test_success_over_http2_with_apple_headers_and_a_verified_provider_token(fake):
    answers, server = fake
    first, second = push_message(), push_message()
    message_deliver(message_id=first.pk)
    message_deliver(message_id=second.pk)
    first.refresh_from_db()
    expected_id = str(uuid.uuid5(apns.APNS_ID_NAMESPACE, f"orchestrator-message-{first.pk}"))
    assert (first.status, first.provider, first.provider_message_id) == ("sent", "apns", expected_id)
    one, _two = server.requests
    assert one["http_version"] == "HTTP/2" and one["method"] == "POST"
    assert one["path"] == f"/3/device/{point(first).address}"
    headers = one["headers"]
    assert headers["apns-topic"] == TOPIC
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"  # transactional
    assert headers["apns-id"] == expected_id
    # Our message id as the collapse id: a resend replaces the first notification instead of a second.
    assert headers["apns-collapse-id"] == f"orchestrator-message-{first.pk}"
    expiration = int(headers["apns-expiration"]) - int(timezone.now().timestamp())
    assert 4 * 3600 - 60 < expiration <= 4 * 3600  # no expiry on the message: push's default shelf life
    assert json.loads(one["body"]) == {
        "aps": {"alert": {"title": PUSH["title"], "body": PUSH["body"]}},
        "message_id": str(first.pk),
        "action_url": "app://orders",
    }
    assert len(answers.tokens) == 1  # the provider token is reused across sends
    assert server.connections == 1  # and so is the HTTP/2 connection


def test_promotional_pushes_go_at_priority_5_and_expire_with_the_message(fake):
    _answers, server = fake
    expires = timezone.now() + timezone.timedelta(minutes=30)
    m = push_message(purpose="promotional", expires_at=expires)
    message_deliver(message_id=m.pk)
    [request] = server.requests
    assert request["headers"]["apns-priority"] == "5"
    assert abs(int(request["headers"]["apns-expiration"]) - int(expires.timestamp())) <= 2


def test_a_resend_carries_the_same_apns_id_and_collapse_id(fake):
    _answers, server = fake
    m = push_message()
    outgoing = Outgoing(
        message_id=m.pk, channel="push", purpose="alert", recipient="r", to="abcdef", content=PUSH
    )
    backend = ApnsBackend()
    first, again = backend.send(outgoing), backend.send(outgoing)
    assert first.outcome == again.outcome == "success"
    assert first.provider_message_id == again.provider_message_id
    a, b = server.requests
    assert a["headers"]["apns-id"] == b["headers"]["apns-id"]
    # httpx really speaks HTTP/2 to an http:// URL (h2c with prior knowledge), on the client's side too.
    assert backend.transmit(backend.build(outgoing), outgoing).http_version == "HTTP/2"
    assert a["headers"]["apns-collapse-id"] == b["headers"]["apns-collapse-id"]


def test_410_unregistered_fails_the_message_and_suppresses_the_token(fake):
    answers, _server = fake
    answers.script.append((410, "Unregistered", 0))
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "failed" and "HTTP 410 Unregistered" in m.last_error
    p = point(m)
    assert p.undeliverable_at is not None and "apns: HTTP 410 Unregistered" in p.undeliverable_reason
    change = PreferenceChange.objects.get()
    assert (change.kind, change.message_id) == (ChangeKind.TOKEN_LOST, m.pk)
    with pytest.raises(SendRefused) as refused:
        message_send(recipient=m.recipient, channel="push", purpose="transactional", content=PUSH)
    assert refused.value.errors["channel"][0]["code"] == "undeliverable"


@pytest.mark.parametrize("reason", ["BadDeviceToken", "DeviceTokenNotForTopic"])
def test_a_bad_device_token_is_suppressed_too(fake, reason):
    answers, _server = fake
    answers.script.append((400, reason, 0))
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "failed" and reason in m.last_error
    assert reason in point(m).undeliverable_reason


@pytest.mark.parametrize(("status", "reason"), [(400, "BadTopic"), (413, "PayloadTooLarge")])
def test_another_4xx_fails_the_message_with_apples_reason_but_keeps_the_token(fake, status, reason):
    answers, _server = fake
    answers.script.append((status, reason, 0))
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "failed" and f"HTTP {status} {reason}" in m.last_error
    assert point(m).undeliverable_at is None


def test_an_expired_provider_token_is_reissued_once_and_the_send_goes_through(fake):
    answers, server = fake
    warm = push_message()
    message_deliver(message_id=warm.pk)
    answers.script.append("expire")
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "sent"
    assert len(answers.tokens) == 2 and answers.tokens[0] in answers.expired
    assert [r["headers"]["authorization"] for r in server.requests[1:]] == answers.tokens
    assert DeliveryAttempt.objects.filter(message=m).count() == 1  # the retry is inside the one call


def test_a_provider_token_refused_twice_is_transient(fake, settings, monkeypatch):
    answers, server = fake
    issued = []
    real_sign = apns.provider_token_sign

    def sign_and_expire(**kwargs):
        token = real_sign(**kwargs)
        issued.append(token)
        answers.expired.add(f"bearer {token}")
        return token

    monkeypatch.setattr(apns, "provider_token_sign", sign_and_expire)
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "accepted" and "ExpiredProviderToken" in m.last_error and m.next_attempt_at
    assert len(server.requests) == 2 and len(issued) == 2  # one reissue, no loop


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "InternalServerError"), (503, "ServiceUnavailable"), (429, "TooManyRequests")],
)
def test_5xx_and_429_are_transient_and_retried(fake, status, reason):
    answers, _server = fake
    answers.script.append((status, reason, 0))
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "accepted" and f"HTTP {status} {reason}" in m.last_error and m.next_attempt_at
    assert point(m).undeliverable_at is None


def test_a_timeout_is_transient(fake):
    answers, _server = fake
    answers.script.append((200, "", 1.5))  # beyond APNS_TIMEOUT (0.5 s)
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "accepted" and "no answer within 0.5 s" in m.last_error
    # The next send still goes through (a fresh stream, or a fresh connection).
    again = push_message()
    message_deliver(message_id=again.pk)
    again.refresh_from_db()
    assert again.status == "sent"


def test_nothing_listening_is_transient(settings, fake):
    _answers, server = fake
    closed = f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    settings.CHANNELS = {**settings.CHANNELS, "APNS": {**settings.CHANNELS["APNS"], "BASE_URL": closed}}
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "accepted" and "could not connect" in m.last_error


def test_without_a_key_nothing_is_lost(settings, fake):
    settings.CHANNELS = {**settings.CHANNELS, "APNS": {**settings.CHANNELS["APNS"], "KEY": "", "TOPIC": ""}}
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "accepted" and "APNS_KEY, APNS_TOPIC not configured" in m.last_error


def test_the_key_may_be_a_path_and_a_wrong_key_is_transient(settings, fake, key_pem, tmp_path):
    answers, _server = fake
    path = tmp_path / "AuthKey_ABC123DEFG.p8"
    path.write_text(key_pem)
    settings.CHANNELS = {**settings.CHANNELS, "APNS": {**settings.CHANNELS["APNS"], "KEY": str(path)}}
    m = push_message()
    message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "sent" and len(answers.tokens) == 1
    settings.CHANNELS = {
        **settings.CHANNELS,
        "APNS": {**settings.CHANNELS["APNS"], "KEY": str(tmp_path / "missing.p8")},
    }
    lost = push_message()
    message_deliver(message_id=lost.pk)
    lost.refresh_from_db()
    assert lost.status == "accepted" and "APNs auth key unreadable" in lost.last_error


def test_the_provider_token_is_cached_across_threads_and_reissued_after_50_minutes(key_pem, monkeypatch):
    clear_caches()
    now = [1_800_000_000.0]
    monkeypatch.setattr(apns, "_clock", lambda: now[0])
    auth = {"key_value": key_pem, "key_id": KEY_ID, "team_id": TEAM_ID}
    seen, barrier = [], threading.Barrier(8)

    def fetch():
        barrier.wait()
        seen.append(apns.provider_token(**auth))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1
    first = seen[0]
    now[0] += 49 * 60
    assert apns.provider_token(**auth) == first
    now[0] += 2 * 60
    fresh = apns.provider_token(**auth)
    assert fresh != first
    assert json.loads(_unb64(fresh.split(".")[1])) == {"iss": TEAM_ID, "iat": int(now[0])}
    # A token refused by Apple is reissued once; a racing thread holding the old one gets the new one.
    now[0] += 60
    newer = apns.provider_token(**auth, stale=fresh)
    assert newer != fresh and apns.provider_token(**auth, stale=fresh) == newer
    clear_caches()


def test_sandbox_and_production_hosts(settings, key_pem):
    settings.CHANNELS = {**settings.CHANNELS, "APNS": apns_settings(settings, "", key_pem)}
    assert ApnsBackend().base_url == "https://api.push.apple.com"
    assert ApnsBackend(use_sandbox=True).base_url == "https://api.sandbox.push.apple.com"


def test_through_the_pipeline_a_5xx_fails_over_to_the_next_push_provider_exactly_once(
    fake, settings, django_capture_on_commit_callbacks
):
    answers, server = fake
    settings.CHANNELS = {
        **settings.CHANNELS,
        "BACKENDS": {
            **settings.CHANNELS["BACKENDS"],
            "push": [APNS, "channels_app.backends.push.LocmemPushBackend"],
        },
    }
    answers.script.extend([(503, "ServiceUnavailable", 0), (500, "InternalServerError", 0)])
    recipient = ReachableRecipientFactory()  # no other message waits: the drain delivers only ours
    with django_capture_on_commit_callbacks(execute=True):
        down = message_send(recipient=recipient, channel="push", purpose="transactional", content=PUSH)
    with django_capture_on_commit_callbacks(execute=True):
        up = message_send(recipient=recipient, channel="push", purpose="alert", content=PUSH)
    down.refresh_from_db()
    assert (down.status, down.provider) == ("sent", "push:locmem")
    rows = list(DeliveryAttempt.objects.filter(message=down).values_list("provider", "outcome", "response"))
    assert [(p, o) for p, o, _ in rows] == [("apns", "transient"), ("push:locmem", "success")]
    assert "HTTP 503 ServiceUnavailable" in rows[0][2]
    assert [p["message_id"] for p in push.outbox].count(down.pk) == 1
    # The second message: APNs answers 500 too, fails over; the third call would have succeeded at APNs.
    up.refresh_from_db()
    assert (up.status, up.provider) == ("sent", "push:locmem")
    assert len(server.requests) == 2
    third = push_message()
    message_deliver(message_id=third.pk)
    third.refresh_from_db()
    assert (third.status, third.provider) == ("sent", "apns")
    assert len(push.outbox) == 2
