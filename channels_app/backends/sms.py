"""SMS backends: an in-memory outbox, and a Twilio-style REST API over HTTP."""

from __future__ import annotations

import uuid

import requests

from .base import BaseBackend, ConfiguredBackend, Outbox, Outgoing, PermanentError, SendResult, content_text

# Twilio error codes meaning the number cannot receive messages (invalid, not mobile, opted out).
TWILIO_DEAD_NUMBER_CODES = frozenset({21211, 21214, 21610, 21614})

# Every SMS the locmem backend "sent" in this process (like django.core.mail.outbox).
outbox = Outbox()


class LocmemSmsBackend(BaseBackend):
    """Honours the idempotency key as a real provider would: a repeat returns the first sid, no new SMS."""

    name = "sms:locmem"

    def transmit(self, request: Outgoing, outgoing: Outgoing) -> str:
        def entry() -> dict:
            return {
                "sid": f"SM{uuid.uuid4().hex}",
                "to": outgoing.to,
                "body": content_text(outgoing.content),
                "message_id": outgoing.message_id,
                "idempotency_key": outgoing.idempotency_key,
            }

        return outbox.once(outgoing.idempotency_key, entry)["sid"]

    def parse(self, response: str, outgoing: Outgoing) -> SendResult:
        return SendResult.success(response, "stored in the in-memory SMS outbox")


class TwilioSmsBackend(ConfiguredBackend):
    """POST {BASE_URL}/2010-04-01/Accounts/{SID}/Messages.json, form-encoded, basic auth.

    429, 5xx, timeouts and connection errors are transient; other 4xx are permanent (bad number,
    blocked recipient...). The message's idempotency key goes in `I-Twilio-Idempotency-Token`.
    """

    name = "twilio"
    settings_key = "SMS_HTTP"

    def build(self, outgoing: Outgoing) -> dict:
        if not outgoing.to.startswith("+"):
            raise PermanentError(f"{outgoing.to!r} is not an E.164 phone number.")
        data = {"To": outgoing.to, "From": self.conf["FROM"], "Body": content_text(outgoing.content)}
        if self.conf.get("STATUS_CALLBACK"):
            data["StatusCallback"] = self.conf["STATUS_CALLBACK"]
        base = self.conf["BASE_URL"].rstrip("/")
        return {
            "url": f"{base}/2010-04-01/Accounts/{self.conf['ACCOUNT_SID']}/Messages.json",
            "data": data,
            "headers": {"I-Twilio-Idempotency-Token": outgoing.idempotency_key},
        }

    def transmit(self, request: dict, outgoing: Outgoing) -> requests.Response:
        return self.http_post(
            self.http_session(),
            request["url"],
            data=request["data"],
            headers=request["headers"],
            auth=(self.conf["ACCOUNT_SID"], self.conf["AUTH_TOKEN"]),
        )

    def parse(self, response: requests.Response, outgoing: Outgoing) -> SendResult:
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        if response.status_code in (200, 201):
            if not payload.get("sid"):
                return SendResult.transient(f"HTTP {response.status_code} without a message sid")
            return SendResult.success(
                str(payload["sid"]), f"HTTP {response.status_code} {payload.get('status', '')}"
            )
        detail = payload.get("message") or response.text[:200] or response.reason
        code = payload.get("code")
        text = f"HTTP {response.status_code}" + (f" (code {code})" if code else "") + f": {detail}"
        if response.status_code == 429 or response.status_code >= 500 or response.status_code == 408:
            return SendResult.transient(text)
        # Twilio's "invalid To number" and "unsubscribed recipient" say the number itself is dead.
        return SendResult.permanent(text, undeliverable=code in TWILIO_DEAD_NUMBER_CODES)
