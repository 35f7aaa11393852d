"""Signed preference links: the token behind the preference centre and List-Unsubscribe (no login).

The link is `django.core.signing` over {recipient, message, channel, purpose} with its own salt: a
tampered link fails the signature, an old one the max age, and rotating SECRET_KEY (without keeping the
old key in SECRET_KEY_FALLBACKS) retires every link. The pages themselves are in
`orchestrator.preference_centre`; channels (the email backend, the ESP webhooks) use the links from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.urls import reverse

from .consent import consent_conf
from .models import Channel, Purpose

SALT = "orchestrator.preferences"


@dataclass(frozen=True)
class LinkClaims:
    recipient_id: int
    message_id: int | None = None
    channel: str = ""
    purpose: str = ""


class LinkInvalid(Exception):
    """The link was tampered with, signed with a retired key, or names no recipient."""


class LinkExpired(Exception):
    """The link is older than CONSENT['LINK_MAX_AGE']."""


def preference_token_make(
    *, recipient_id: int, message_id: int | None = None, channel: str = "", purpose: str = ""
) -> str:
    """A signed, timestamped token naming the recipient (and the message that carried it)."""
    claims = {"r": recipient_id}
    if message_id is not None:
        claims["m"] = message_id
    if channel:
        claims["c"] = channel
    if purpose:
        claims["p"] = purpose
    return signing.dumps(claims, salt=SALT, compress=True)


def preference_token_read(token: str) -> LinkClaims:
    """The claims of a valid token; raises LinkExpired or LinkInvalid."""
    max_age = consent_conf("LINK_MAX_AGE")
    try:
        claims = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise LinkExpired(str(exc)) from exc
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise LinkInvalid(str(exc)) from exc
    if not isinstance(claims, dict) or not isinstance(claims.get("r"), int):
        raise LinkInvalid("malformed claims")
    message_id = claims.get("m")
    channel, purpose = claims.get("c", ""), claims.get("p", "")
    if message_id is not None and not isinstance(message_id, int):
        raise LinkInvalid("malformed message id")
    if channel not in ("", *Channel.values) or purpose not in ("", *Purpose.values):
        raise LinkInvalid("malformed channel or purpose")
    return LinkClaims(claims["r"], message_id, channel, purpose)


def preference_url(token: str, *, one_click: bool = False) -> str:
    """The absolute URL of the page (or of its one-click endpoint), on settings.PUBLIC_BASE_URL."""
    name = "preferences-unsubscribe" if one_click else "preferences"
    return settings.PUBLIC_BASE_URL + reverse(name, args=[token])


def unsubscribe_mailto(token: str) -> str:
    """The mailto: of List-Unsubscribe (the token in the subject identifies the recipient)."""
    address = consent_conf("UNSUBSCRIBE_MAILTO")
    if not address:
        address = "unsubscribe@" + (settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "localhost")
    return f"mailto:{address}?subject={quote('unsubscribe ' + token)}"


def list_unsubscribe_headers(*, recipient_id: int, message_id: int, channel: str, purpose: str) -> dict:
    """RFC 2369 + RFC 8058 headers for an engagement or promotional email."""
    token = preference_token_make(
        recipient_id=recipient_id, message_id=message_id, channel=channel, purpose=purpose
    )
    return {
        "List-Unsubscribe": f"<{preference_url(token, one_click=True)}>, <{unsubscribe_mailto(token)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


# --- the page ---------------------------------------------------------------------------------------
