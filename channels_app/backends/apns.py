"""Native push straight to Apple: the APNs HTTP/2 provider API with token-based auth.

Client: httpx with HTTP/2 (`httpx[http2]`, on the `h2` state machine), synchronous like every other
backend and the delivery loop, and well kept. Not `aioapns` (asyncio-only: every send would need an event
loop of its own inside our synchronous workers) nor `apns2` (unmaintained, and built on `hyper`, an
HTTP/2 client abandoned by its authors in favour of httpx). One `httpx.Client` per base URL per process keeps
the HTTP/2 connection open across sends, as Apple asks (it treats connect-per-send as a denial of
service); httpx's pool is thread-safe, so concurrent deliveries share it.

Auth: an ES256 JWT (`{"alg": "ES256", "kid": APNS_KEY_ID}.{"iss": APNS_TEAM_ID, "iat": now}`) signed with
the .p8 key, cached per process and reissued after 50 minutes (Apple refuses tokens older than an hour
and answers 429 TooManyProviderTokenUpdates to one reissued more often than every 20 minutes). The cache
is behind a lock; a 403 ExpiredProviderToken / InvalidProviderToken drops the token the call used (only
that one, so threads racing on the same 403 reissue once) and the call retries once with a fresh token.

Idempotency: APNs has no idempotency key. Our message id rides as `apns-collapse-id`, so a resend after a
lost answer (a timeout, a worker lost mid-call) replaces the first notification on the device instead of
showing a second one, and as `apns-id` (a UUID derived from it, which Apple echoes back and names in its
logs), so both calls are the same notification in Apple's records and ours; the app reads `message_id`.

Answers: 200 → sent (the `apns-id` is the provider message id). 410 Unregistered, 400 BadDeviceToken and
400 DeviceTokenNotForTopic mean the token is dead for this app → permanent, and delivery suppresses the
contact point (as FCM's UNREGISTERED). 403 on the provider token twice → transient; 429, 5xx, timeouts
and connection errors → transient (the next provider, a retry later); any other 4xx → permanent with
Apple's reason.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .base import ConfiguredBackend, Outgoing, PermanentError, SendResult, TransientError
from .push import push_ttl_seconds

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
TOKEN_LIFETIME = 50 * 60  # seconds; Apple accepts a token for an hour and no reissue within 20 minutes
DEAD_TOKEN_REASONS = frozenset({"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"})
PROVIDER_TOKEN_REASONS = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})
URGENT_PURPOSES = frozenset({"transactional", "alert"})
# A fixed namespace: the same message id gives the same apns-id in every process and every resend.
APNS_ID_NAMESPACE = uuid.UUID("6f1b2c4e-3d7a-5e8f-9a0b-1c2d3e4f5a6b")

_clock = time.time  # wall-clock seconds (the JWT's iat); tests move it
_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_keys: dict[str, ec.EllipticCurvePrivateKey] = {}
_clients: dict[str, httpx.Client] = {}
_lock = threading.Lock()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signing_key(value: str) -> ec.EllipticCurvePrivateKey:
    """The .p8 key from its PEM text or its path, loaded once per process."""
    with _lock:
        if value in _keys:
            return _keys[value]
    text = value.strip()
    pem = text.encode() if text.startswith("-----BEGIN") else Path(text).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("not an APNs auth key (an EC P-256 private key, the .p8 file, expected)")
    with _lock:
        _keys[value] = key
    return key


def provider_token_sign(*, key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str, issued_at: int) -> str:
    """An ES256 JWT as APNs wants it: the raw 64-byte r‖s signature (JWS), not the DER one."""
    header = _b64(json.dumps({"alg": "ES256", "kid": key_id}, separators=(",", ":")).encode())
    claims = _b64(json.dumps({"iss": team_id, "iat": issued_at}, separators=(",", ":")).encode())
    signing_input = f"{header}.{claims}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{header}.{claims}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def provider_token(*, key_value: str, key_id: str, team_id: str, stale: str = "") -> str:
    """The cached token for this key, reissued after TOKEN_LIFETIME or when it is `stale` (refused)."""
    cache_key = (key_value, key_id, team_id)
    key = _signing_key(key_value)
    with _lock:
        now = _clock()
        cached = _tokens.get(cache_key)
        if cached and cached[0] != stale and now - cached[1] < TOKEN_LIFETIME:
            return cached[0]
        token = provider_token_sign(key=key, key_id=key_id, team_id=team_id, issued_at=int(now))
        _tokens[cache_key] = (token, now)
        return token


def _client(base_url: str) -> httpx.Client:
    """One HTTP/2-only client per base URL per process (h2 over TLS, or h2c with prior knowledge for
    an http:// URL: a loopback fake in the tests). Keyed by pid too: a forked worker never shares its
    parent's open connection."""
    key = f"{os.getpid()} {base_url}"
    with _lock:
        if key not in _clients:
            _clients[key] = httpx.Client(http1=False, http2=True)
        return _clients[key]


def apns_id_for(outgoing: Outgoing) -> str:
    return str(uuid.uuid5(APNS_ID_NAMESPACE, outgoing.idempotency_key))


class ApnsBackend(ConfiguredBackend):
    name = "apns"
    settings_key = "APNS"

    @property
    def base_url(self) -> str:
        if self.conf.get("BASE_URL"):
            return str(self.conf["BASE_URL"]).rstrip("/")
        return SANDBOX_URL if self.conf.get("USE_SANDBOX") else PRODUCTION_URL

    def build(self, outgoing: Outgoing) -> dict[str, Any]:
        missing = [f"APNS_{k}" for k in ("KEY", "KEY_ID", "TEAM_ID", "TOPIC") if not self.conf.get(k)]
        if missing:
            raise TransientError(f"{', '.join(missing)} not configured.")
        if not outgoing.to:
            raise PermanentError("No APNs device token.")
        c = outgoing.content
        ttl = push_ttl_seconds(outgoing)
        payload: dict[str, Any] = {
            "aps": {"alert": {"title": str(c.get("title", "")), "body": str(c.get("body", ""))}},
            "message_id": str(outgoing.message_id),
        }
        if c.get("action_url"):
            payload["action_url"] = str(c["action_url"])
        headers = {
            "apns-topic": str(self.conf["TOPIC"]),
            "apns-push-type": "alert",
            "apns-priority": "10" if outgoing.purpose in URGENT_PURPOSES else "5",
            # Apple keeps trying until then (epoch seconds); 0 would mean "once, now or never".
            "apns-expiration": str(int(_clock()) + ttl) if ttl else "0",
            "apns-collapse-id": outgoing.idempotency_key[:64],
            "apns-id": apns_id_for(outgoing),
        }
        return {
            "url": f"{self.base_url}/3/device/{quote(outgoing.to, safe='')}",
            "headers": headers,
            "content": json.dumps(payload, separators=(",", ":")).encode(),
        }

    def _post(self, request: dict[str, Any], token: str) -> httpx.Response:
        try:
            return _client(self.base_url).post(
                request["url"],
                headers={**request["headers"], "authorization": f"bearer {token}"},
                content=request["content"],
                timeout=self.wait,
            )
        except httpx.TimeoutException as exc:
            raise TransientError(f"no answer within {self.wait} s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"could not connect: {type(exc).__name__}: {exc}") from exc

    def transmit(self, request: dict[str, Any], outgoing: Outgoing) -> httpx.Response:
        auth = {"key_value": self.conf["KEY"], "key_id": self.conf["KEY_ID"], "team_id": self.conf["TEAM_ID"]}
        try:
            token = provider_token(**auth)
        except (OSError, ValueError) as exc:
            raise TransientError(f"APNs auth key unreadable: {exc}") from exc
        response = self._post(request, token)
        if response.status_code == 403 and _reason(response) in PROVIDER_TOKEN_REASONS:
            # The token expired or was refused: reissue it once and retry within this call.
            response = self._post(request, provider_token(**auth, stale=token))
        return response

    def parse(self, response: httpx.Response, outgoing: Outgoing) -> SendResult:
        code = response.status_code
        if code == 200:
            return SendResult.success(response.headers.get("apns-id") or apns_id_for(outgoing), "HTTP 200")
        reason = _reason(response)
        text = f"HTTP {code} {reason}".strip()
        if code == 410 and response.content:
            text += f" (since {_body(response).get('timestamp', '?')})"
        if code in (408, 429) or code >= 500 or reason in PROVIDER_TOKEN_REASONS:
            return SendResult.transient(text)
        return SendResult.permanent(text, undeliverable=reason in DEAD_TOKEN_REASONS or code == 410)

    def classify(self, exc: Exception) -> SendResult:
        if isinstance(exc, httpx.HTTPError):
            return SendResult.transient(f"{type(exc).__name__}: {exc}")
        return super().classify(exc)


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _reason(response: httpx.Response) -> str:
    return str(_body(response).get("reason") or "")[:200]
