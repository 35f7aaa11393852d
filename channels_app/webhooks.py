"""Provider receipt formats: each parser turns a webhook body into receipts, or says why it cannot."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime

from .services import ReceiptType


class WebhookMalformed(ValueError):
    """The body is not a receipt this provider sends (→ 400, nothing written)."""


@dataclass(frozen=True)
class Receipt:
    type: str
    message_id: int | None = None
    provider_message_id: str = ""
    provider: str = ""
    occurred_at: datetime | None = None
    detail: str = ""


def _when(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    parsed = parse_datetime(str(value)) if isinstance(value, str) else None
    if parsed is None or parsed.tzinfo is None:
        raise WebhookMalformed(f"{where}: occurred_at must be an ISO 8601 date-time with a time zone.")
    return parsed


# Twilio's MessageStatus values; the in-flight ones are acknowledged and ignored.
TWILIO_STATUS = {
    "delivered": ReceiptType.DELIVERED,
    "undelivered": ReceiptType.FAILED,
    "failed": ReceiptType.FAILED,
    "read": ReceiptType.OPENED,
}
TWILIO_IN_FLIGHT = {"queued", "accepted", "scheduled", "sending", "sent", "receiving", "received"}


def twilio_parse(data: Mapping[str, Any]) -> list[Receipt]:
    """Twilio status callback (form-encoded): MessageSid, MessageStatus, ErrorCode?."""
    sid = str(data.get("MessageSid") or data.get("SmsSid") or "").strip()
    status = str(data.get("MessageStatus") or data.get("SmsStatus") or "").strip().lower()
    if not sid or not status:
        raise WebhookMalformed("A Twilio status callback needs MessageSid and MessageStatus.")
    if status in TWILIO_IN_FLIGHT:
        return []
    if status not in TWILIO_STATUS:
        raise WebhookMalformed(f"Unknown Twilio MessageStatus {status!r}.")
    code = data.get("ErrorCode")
    return [
        Receipt(
            type=TWILIO_STATUS[status],
            provider_message_id=sid,
            provider="twilio",
            detail=f"Twilio {status}" + (f" (error {code})" if code else ""),
        )
    ]


def generic_parse(data: Any) -> list[Receipt]:
    """Our own format, for relays and ESPs wired by hand: one receipt or {"receipts": [...]}, each
    {message_id | provider_message_id, type, occurred_at?, detail?}."""
    items = data.get("receipts") if isinstance(data, Mapping) and "receipts" in data else data
    if isinstance(items, Mapping):
        items = [items]
    if not isinstance(items, list) or not items:
        raise WebhookMalformed('Expected a receipt object or {"receipts": [...]}.')
    receipts = []
    for i, item in enumerate(items):
        where = f"receipts[{i}]"
        if not isinstance(item, Mapping):
            raise WebhookMalformed(f"{where} must be an object.")
        kind = item.get("type")
        if kind not in ReceiptType.ALL:
            raise WebhookMalformed(f"{where}.type must be one of {', '.join(ReceiptType.ALL)}.")
        message_id = item.get("message_id")
        provider_message_id = item.get("provider_message_id") or ""
        if message_id is None and not provider_message_id:
            raise WebhookMalformed(f"{where} needs message_id or provider_message_id.")
        if message_id is not None:
            try:
                message_id = int(message_id)
            except (TypeError, ValueError) as exc:
                raise WebhookMalformed(f"{where}.message_id must be an integer.") from exc
        receipts.append(
            Receipt(
                type=kind,
                message_id=message_id,
                provider_message_id=str(provider_message_id),
                occurred_at=_when(item.get("occurred_at"), where),
                detail=str(item.get("detail") or "")[:500],
            )
        )
    return receipts


PROVIDERS: dict[str, Callable[[Any], list[Receipt]]] = {
    "twilio": twilio_parse,
    "generic": generic_parse,
}


# --- inbound SMS (Twilio-style) ---------------------------------------------------------------------


def twilio_signature(*, auth_token: str, url: str, params: Mapping[str, list[str]]) -> str:
    """Twilio's X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each POST name and value, sorted))."""
    payload = url
    for name in sorted(set(params)):
        for value in sorted(set(params[name])):
            payload += name + value
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_signature_valid(
    *, auth_token: str, urls: list[str], params: Mapping[str, list[str]], given: str
) -> bool:
    """Whether `given` signs the request for any of the URLs it may have been sent to (the public one
    behind a proxy, or the one this server saw). Constant-time; no token configured → never valid."""
    if not auth_token or not given:
        return False
    return any(
        hmac.compare_digest(
            twilio_signature(auth_token=auth_token, url=url, params=params).encode(), given.encode()
        )
        for url in urls
    )


STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


def sms_keyword(body: str) -> str:
    """The keyword a whole message is (carriers match the entire body, any case): STOP, START, HELP or ''."""
    word = (body or "").strip().strip(".!").upper()
    if word in STOP_WORDS:
        return "STOP"
    if word in START_WORDS:
        return "START"
    if word in HELP_WORDS:
        return "HELP"
    return ""
