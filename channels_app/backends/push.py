"""Push backends: an in-memory outbox, and Web Push (pywebpush, VAPID)."""

from __future__ import annotations

import json
import uuid

from django.utils import timezone
from pywebpush import WebPushException, webpush

from .base import BaseBackend, ConfiguredBackend, Outbox, Outgoing, PermanentError, SendResult

# Every push the locmem backend "sent" in this process.
outbox = Outbox()


def push_payload(outgoing: Outgoing) -> dict:
    c = outgoing.content
    return {
        "title": c.get("title", ""),
        "body": c.get("body", ""),
        "action_url": c.get("action_url", ""),
        "message_id": outgoing.message_id,
    }


def push_ttl_seconds(outgoing: Outgoing, default: int = 4 * 3600) -> int:
    """Seconds the push service should keep trying: until the message expires (push expires fast)."""
    if outgoing.expires_at is None:
        return default
    return max(0, int((outgoing.expires_at - timezone.now()).total_seconds()))


class LocmemPushBackend(BaseBackend):
    """Honours the idempotency key as a real provider would: a repeat returns the first id, no new push."""

    name = "push:locmem"

    def transmit(self, request: Outgoing, outgoing: Outgoing) -> str:
        def entry() -> dict:
            return {
                "id": f"push-{uuid.uuid4().hex}",
                "to": outgoing.to,
                "message_id": outgoing.message_id,
                "idempotency_key": outgoing.idempotency_key,
                **push_payload(outgoing),
            }

        return outbox.once(outgoing.idempotency_key, entry)["id"]

    def parse(self, response: str, outgoing: Outgoing) -> SendResult:
        return SendResult.success(response, "stored in the in-memory push outbox")


class WebPushBackend(ConfiguredBackend):
    """The push token is the browser's subscription JSON ({endpoint, keys: {p256dh, auth}}).

    404/410 mean the subscription is gone (permanent); 429 and 5xx are transient.
    """

    name = "webpush"

    settings_key = "WEBPUSH"

    def build(self, outgoing: Outgoing) -> dict:
        try:
            subscription = json.loads(outgoing.to)
        except ValueError as exc:
            raise PermanentError("The push token is not a Web Push subscription (JSON expected).") from exc
        if (
            not isinstance(subscription, dict)
            or not subscription.get("endpoint")
            or not subscription.get("keys")
        ):
            raise PermanentError("The Web Push subscription lacks an endpoint or keys.")
        if not self.conf.get("VAPID_PRIVATE_KEY"):
            raise PermanentError("WEBPUSH_VAPID_PRIVATE_KEY is not configured.")
        return {
            "subscription_info": subscription,
            "data": json.dumps(push_payload(outgoing)),
            "ttl": push_ttl_seconds(outgoing),
        }

    def transmit(self, request: dict, outgoing: Outgoing):
        return webpush(
            subscription_info=request["subscription_info"],
            data=request["data"],
            vapid_private_key=self.conf["VAPID_PRIVATE_KEY"],
            vapid_claims={"sub": self.conf["VAPID_SUBJECT"]},
            ttl=request["ttl"],
            timeout=self.wait,
            headers={"Topic": f"m{outgoing.message_id}"[:32], "Urgency": "high"},
        )

    def parse(self, response, outgoing: Outgoing) -> SendResult:
        location = response.headers.get("Location", "") if hasattr(response, "headers") else ""
        return SendResult.success(location, f"HTTP {getattr(response, 'status_code', '')}")

    def classify(self, exc: Exception) -> SendResult:
        if isinstance(exc, WebPushException):
            status = getattr(exc.response, "status_code", None)
            text = f"HTTP {status}: {(getattr(exc.response, 'text', '') or '')[:200]}"
            if status is None or status == 429 or status >= 500:
                return SendResult.transient(text if status else str(exc))
            # 404/410: the browser subscription is gone for good.
            return SendResult.permanent(text, undeliverable=status in (404, 410))
        import requests

        if isinstance(exc, requests.RequestException):
            return SendResult.transient(f"{type(exc).__name__}: {exc}")
        return super().classify(exc)
