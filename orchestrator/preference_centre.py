"""The recipient's preference centre: a public page reached by a signed, expiring link (no login).

`GET /preferences/{signed}/` shows channels × purposes in plain words, in the recipient's language, with
one-click unsubscribe / resubscribe per purpose or channel; `POST /preferences/{signed}/unsubscribe/`
is RFC 8058's one-click opt-out that mailbox providers call from the List-Unsubscribe header. Each change
is recorded with source `link`.

This module is part of the roof (like the API): it reads the channel policies to show only the purposes
each channel carries. The links are `orchestrator.preferences`.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from channels_app.lint import channel_policy_views

from .consent import OPTIONAL_PURPOSES, ConsentError, preferences_set
from .models import ChangeSource, Channel, ContactPoint, Message, Preference, Purpose, Recipient
from .preferences import LinkClaims, LinkExpired, LinkInvalid, preference_token_read

CHANNEL_WORDS = {
    Channel.EMAIL: _("Email"),
    Channel.PUSH: _("Push notifications"),
    Channel.SMS: _("Text messages (SMS)"),
    Channel.IN_APP: _("Messages inside the app"),
}
PURPOSE_WORDS = {
    Purpose.TRANSACTIONAL: (
        _("Receipts and confirmations"),
        _("About something you did, like an order or a password change. Always on."),
    ),
    Purpose.ALERT: (_("Security and account alerts"), _("Rare and important: sign-ins, fraud, outages.")),
    Purpose.ENGAGEMENT: (_("Reminders and tips"), _("Nudges about things you started, like a saved cart.")),
    Purpose.PROMOTIONAL: (_("News and offers"), _("Marketing: new products, events and sales.")),
}


# --- the link ---------------------------------------------------------------------------------------


def recipient_language(recipient: Recipient | None, request: HttpRequest) -> str:
    """The recipient's locale when we support it (pt-BR → pt-br, fr-FR → fr), else English."""
    for candidate in ((recipient.locale if recipient else "") or "", "en"):
        try:
            return translation.get_supported_language_variant(candidate.replace("_", "-").lower())
        except LookupError:
            continue
    return "en"


def _mask(address: str) -> str:
    """a•••@example.com / +1•••0123: enough to recognise, not enough to harvest from a forwarded link."""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}•••@{domain}"
    if address.startswith("+") and len(address) > 6:
        return f"{address[:2]}•••{address[-4:]}"
    return ""


def _private(response: HttpResponse) -> HttpResponse:
    """Never indexed, cached, or leaked to another site through a Referer."""
    response["X-Robots-Tag"] = "noindex, nofollow, noarchive"
    response["Cache-Control"] = "private, no-store"
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" and CSRF refuses the form.
    response["Referrer-Policy"] = "same-origin"
    return response


def _invalid(request: HttpRequest, *, expired: bool) -> HttpResponse:
    language = translation.get_language_from_request(request)
    with translation.override(language):
        response = TemplateResponse(
            request,
            "preferences/invalid.html",
            {"expired": expired, "LANGUAGE_CODE": language},
            status=410 if expired else 400,
        )
        response.render()
    return _private(response)


def _load(request: HttpRequest, token: str) -> tuple[LinkClaims, Recipient] | HttpResponse:
    try:
        claims = preference_token_read(token)
    except LinkExpired:
        return _invalid(request, expired=True)
    except LinkInvalid:
        return _invalid(request, expired=False)
    recipient = Recipient.objects.filter(pk=claims.recipient_id).first()
    if recipient is None:  # erased since the link was sent
        return _invalid(request, expired=False)
    return claims, recipient


def _allowed_purposes() -> dict[str, list[str]]:
    views = channel_policy_views()
    return {
        c: (list(views[c].allowed_purposes) if c in views else []) or list(Purpose.values)
        for c in Channel.values
    }


def _grid(recipient: Recipient) -> list[dict]:
    points: dict[str, list[ContactPoint]] = {}
    for cp in recipient.contact_points.all():
        points.setdefault(cp.channel, []).append(cp)
    off = {
        (p.channel, p.purpose)
        for p in Preference.objects.filter(recipient=recipient, opted_in=False).only("channel", "purpose")
    }
    allowed = _allowed_purposes()
    rows = []
    for channel in Channel.values:
        if channel not in points:
            continue
        purposes = []
        for purpose in Purpose.values:
            if purpose not in allowed[channel]:
                continue
            label, help_text = PURPOSE_WORDS[purpose]
            purposes.append(
                {
                    "purpose": purpose,
                    "label": label,
                    "help": help_text,
                    "on": (channel, purpose) not in off,
                    "locked": purpose not in OPTIONAL_PURPOSES,
                }
            )
        optional = [p for p in purposes if not p["locked"]]
        rows.append(
            {
                "channel": channel,
                "label": CHANNEL_WORDS[channel],
                "addresses": [m for m in (_mask(cp.address) for cp in points[channel]) if m],
                "stopped": not any(cp.opted_in for cp in points[channel]),
                "undeliverable": all(cp.undeliverable_at for cp in points[channel]),
                "purposes": purposes,
                "any_on": any(p["on"] for p in optional),
                "has_optional": bool(optional),
            }
        )
    return rows


@require_http_methods(["GET", "POST"])
def preferences_page(request: HttpRequest, token: str) -> HttpResponse:
    """The page; its buttons POST here (action=off|on, channel, purpose blank for the whole channel)."""
    loaded = _load(request, token)
    if isinstance(loaded, HttpResponse):
        return loaded
    claims, recipient = loaded
    language = recipient_language(recipient, request)
    done = request.GET.get("done", "")
    if request.method == "POST":
        action = request.POST.get("action")
        channel = request.POST.get("channel", "")
        purpose = request.POST.get("purpose", "")
        if (
            action not in ("on", "off")
            or channel not in Channel.values
            or purpose not in ("", *Purpose.values)
        ):
            return _private(HttpResponse(status=400))
        try:
            preferences_set(
                recipient=recipient,
                channel=channel,
                purposes=[purpose] if purpose else None,
                opted_in=action == "on",
                source=ChangeSource.LINK,
                at=timezone.now(),
                message_id=_message_of(claims, recipient),
            )
        except ConsentError:
            return _private(HttpResponse(status=400))
        return redirect(f"{reverse('preferences', args=[token])}?done={action}-{channel}-{purpose}")
    with translation.override(language):
        done_text = ""
        if done:
            action, _sep, rest = done.partition("-")
            channel, _sep, purpose = rest.partition("-")
            if channel in CHANNEL_WORDS and (not purpose or purpose in PURPOSE_WORDS):
                what = PURPOSE_WORDS[purpose][0] if purpose else _("everything optional")
                where = CHANNEL_WORDS[channel]
                if action == "off":
                    done_text = _("Done: you will no longer get %(what)s by %(where)s.") % {
                        "what": str(what).lower() if purpose else what,
                        "where": str(where).lower(),
                    }
                else:
                    done_text = _("Done: you will get %(what)s by %(where)s again.") % {
                        "what": str(what).lower() if purpose else what,
                        "where": str(where).lower(),
                    }
        response = TemplateResponse(
            request,
            "preferences/page.html",
            {
                "recipient": recipient,
                "grid": _grid(recipient),
                "token": token,
                "done_text": done_text,
                "LANGUAGE_CODE": language,
                "one_click": request.resolver_match.url_name == "preferences-unsubscribe",
                "claims": claims,
                "claim_label": (
                    PURPOSE_WORDS[claims.purpose][0] if claims.purpose in OPTIONAL_PURPOSES else ""
                ),
                "claim_channel_label": CHANNEL_WORDS.get(claims.channel, ""),
            },
        )
        response.render()
    return _private(response)


def _message_of(claims: LinkClaims, recipient: Recipient) -> int | None:
    """The message that carried the link, if it is this recipient's (never trust a claim blindly)."""
    if claims.message_id is None:
        return None
    return (
        Message.objects.filter(pk=claims.message_id, recipient=recipient).values_list("pk", flat=True).first()
    )


@csrf_exempt
@require_http_methods(["GET", "POST"])
def preferences_unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """RFC 8058 one-click: a POST opts out of the link's purpose on its channel (the whole channel when
    the link names no purpose) and answers 200 without a page. A GET never changes anything: it shows
    the page with that unsubscribe button first."""
    loaded = _load(request, token)
    if isinstance(loaded, HttpResponse):
        return loaded
    claims, recipient = loaded
    if request.method == "GET":
        return preferences_page(request, token)
    channel = claims.channel or Channel.EMAIL
    purposes = [claims.purpose] if claims.purpose in OPTIONAL_PURPOSES else None
    preferences_set(
        recipient=recipient,
        channel=channel,
        purposes=purposes,
        opted_in=False,
        source=ChangeSource.LINK,
        at=timezone.now(),
        message_id=_message_of(claims, recipient),
        detail="one-click (RFC 8058)" if request.POST.get("List-Unsubscribe") == "One-Click" else "",
    )
    response = HttpResponse("Unsubscribed.\n", content_type="text/plain; charset=utf-8")
    return _private(response)


urlpatterns = [
    path("<str:token>/", preferences_page, name="preferences"),
    path("<str:token>/unsubscribe/", preferences_unsubscribe, name="preferences-unsubscribe"),
]
