"""Native push through Firebase Cloud Messaging's HTTP v1 API (Android, iOS via APNs, web).

Authorised with a service account (google-auth signs the JWT and refreshes the OAuth token; its
AuthorizedSession retries once on a 401). FCM v1 has no idempotency key: our message id rides as the
collapse key on every platform (Android `collapse_key`, APNs `apns-collapse-id`, Web Push `Topic`), so a
resend after a lost answer replaces the first notification on the device instead of showing twice, and
as `data.message_id` for the app. The answer's `name` is the provider message id.

UNREGISTERED, SENDER_ID_MISMATCH and an invalid registration token mean the token is dead → permanent,
and delivery suppresses the contact point; 429, 5xx, auth failures and timeouts are transient (the
next provider, a retry later).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import requests
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

from .base import ConfiguredBackend, Outgoing, PermanentError, SendResult, TransientError
from .push import push_ttl_seconds

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})

_sessions: dict[str, AuthorizedSession] = {}
_lock = threading.Lock()


def _service_account_info(value: str) -> dict[str, Any]:
    text = value.strip()
    if not text.startswith("{"):
        text = Path(text).read_text()
    info = json.loads(text)
    if not isinstance(info, dict) or "private_key" not in info or "client_email" not in info:
        raise ValueError("not a service account key (private_key and client_email expected)")
    return info


def _session(value: str) -> tuple[AuthorizedSession, dict[str, Any]]:
    """One authorised session per service account per process (its token is reused until it expires)."""
    info = _service_account_info(value)
    key = "|".join(str(info.get(k, "")) for k in ("client_email", "private_key_id", "token_uri"))
    with _lock:
        if key not in _sessions:
            credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
            _sessions[key] = AuthorizedSession(credentials)
    return _sessions[key], info


class FcmBackend(ConfiguredBackend):
    name = "fcm"
    settings_key = "FCM"

    def build(self, outgoing: Outgoing) -> dict:
        if not self.conf.get("SERVICE_ACCOUNT"):
            raise TransientError("FCM_SERVICE_ACCOUNT is not configured.")
        c = outgoing.content
        ttl = push_ttl_seconds(outgoing)
        collapse = outgoing.idempotency_key
        data = {"message_id": str(outgoing.message_id)}
        if c.get("action_url"):
            data["action_url"] = str(c["action_url"])
        return {
            "message": {
                "token": outgoing.to,
                "notification": {"title": str(c.get("title", "")), "body": str(c.get("body", ""))},
                "data": data,
                "android": {"collapse_key": collapse, "ttl": f"{ttl}s"},
                "apns": {"headers": {"apns-collapse-id": collapse[:64]}},
                "webpush": {"headers": {"TTL": str(ttl), "Topic": f"m{outgoing.message_id}"[:32]}},
            }
        }

    def transmit(self, request: dict, outgoing: Outgoing) -> requests.Response:
        try:
            session, info = _session(self.conf["SERVICE_ACCOUNT"])
        except (OSError, ValueError) as exc:
            raise TransientError(f"FCM service account unreadable: {exc}") from exc
        project = self.conf.get("PROJECT_ID") or info.get("project_id")
        if not project:
            raise PermanentError("No FCM project id (FCM_PROJECT_ID or the service account's project_id).")
        url = f"{self.conf['BASE_URL'].rstrip('/')}/v1/projects/{project}/messages:send"
        return self.http_post(session, url, json=request)

    def parse(self, response: requests.Response, outgoing: Outgoing) -> SendResult:
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        if response.status_code == 200:
            name = str(payload.get("name") or "")
            if not name:
                return SendResult.transient("HTTP 200 without a message name")
            return SendResult.success(name, "HTTP 200")
        error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
        status = str(error.get("status") or "")
        codes = {
            str(d.get("errorCode"))
            for d in error.get("details") or []
            if isinstance(d, dict) and d.get("errorCode")
        }
        text = f"HTTP {response.status_code} {status} {'/'.join(sorted(codes))}".strip()
        text += f": {str(error.get('message') or response.text[:200])[:300]}"
        code = response.status_code
        if code in (408, 429) or code >= 500 or code == 401:
            return SendResult.transient(text)
        dead = bool(codes & DEAD_TOKEN_CODES) or (
            code == 400 and "registration token" in str(error.get("message", "")).lower()
        )
        return SendResult.permanent(text, undeliverable=dead)

    def classify(self, exc: Exception) -> SendResult:
        if isinstance(exc, requests.RequestException):
            return SendResult.transient(f"{type(exc).__name__}: {exc}")
        # google-auth's token refresh failing (its endpoint down or refusing) is the provider's problem.
        if type(exc).__module__.startswith("google.auth"):
            return SendResult.transient(f"FCM auth: {type(exc).__name__}: {exc}")
        return super().classify(exc)
