"""django-anymail's webhook URLs (/anymail/<esp>/tracking/, /anymail/<esp>/inbound/), each view wrapped so
a failed webhook authentication (basic auth WEBHOOK_SECRET, or the ESP's signature) answers 403 with
{code, detail} and writes nothing, like the rest of our webhooks (anymail's own answer is a 400)."""

from __future__ import annotations

import functools
import json

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.urls import urlpatterns as anymail_patterns
from django.db import transaction
from django.http import HttpResponse
from django.urls import URLPattern


def _json(status: int, code: str, detail: str) -> HttpResponse:
    return HttpResponse(
        json.dumps({"code": code, "detail": detail}), status=status, content_type="application/json"
    )


def _forbidden_on_bad_auth(view):
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            # All events of one post apply together or not at all (the ESP retries the whole post).
            with transaction.atomic():
                return view(request, *args, **kwargs)
        except AnymailWebhookValidationFailure as exc:
            return _json(403, "bad_signature", f"Webhook authentication failed: {exc}")
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return _json(400, "malformed_webhook", f"Unreadable webhook body ({type(exc).__name__}).")

    return wrapped


urlpatterns = [
    URLPattern(p.pattern, _forbidden_on_bad_auth(p.callback), p.default_args, p.name)
    for p in anymail_patterns
]
