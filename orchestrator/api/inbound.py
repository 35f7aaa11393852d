"""POST /api/v1/webhooks/{provider}/inbound/: a recipient's own SMS (Twilio-style): STOP, START, HELP.

Authenticated by the provider's signature only (X-Twilio-Signature, HMAC-SHA1 with the account's auth
token), never by an API token: a bad or missing signature → 403, nothing written. A number we do not know
→ 200 and nothing done (no enumeration). STOP / STOPALL / UNSUBSCRIBE / CANCEL / END / QUIT opt the number
out of SMS, START / UNSTOP opt it back in, HELP answers with the configured help text; each confirmation
is a transactional reply sent through the one send pipeline (exempt from caps and quiet hours).
"""

from __future__ import annotations

import contextlib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpResponse
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.views import APIView

from channels_app.webhooks import sms_keyword, twilio_signature_valid

from ..consent import consent_conf, contact_points_opt
from ..models import ChangeKind, ChangeSource, Channel, ContactPoint, Purpose, Source
from ..pipeline import SendRefused, message_send
from ..services import phone_normalize
from .errors import error_response

INBOUND_PROVIDERS = ("twilio",)
# What each keyword does to the number (HELP changes nothing); each answers with CONSENT["SMS_<KW>_TEXT"].
KEYWORD_OPT = {"STOP": (False, ChangeKind.STOP), "START": (True, ChangeKind.START)}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _twiml() -> HttpResponse:
    return HttpResponse(EMPTY_TWIML, content_type="application/xml")


class InboundSmsView(APIView):
    """A recipient's SMS to our number; answers empty TwiML (replies go through the pipeline)."""

    authentication_classes: list = []  # the provider's signature is the only credential
    permission_classes = [permissions.AllowAny]
    parser_classes = [FormParser, MultiPartParser]

    @extend_schema(
        request=inline_serializer(
            "InboundSms",
            {"From": serializers.CharField(), "To": serializers.CharField(), "Body": serializers.CharField()},
        ),
        responses={200: None, 403: None, 404: None},
        description="Twilio-style inbound SMS; X-Twilio-Signature required. STOP/START/HELP keywords.",
    )
    def post(self, request, provider: str):
        if provider not in INBOUND_PROVIDERS:
            return error_response(
                "unknown_provider", f"No inbound SMS for {provider!r}; known: twilio.", http_status=404
            )
        conf = settings.CHANNELS["SMS_HTTP"]
        params = {k: request.POST.getlist(k) for k in request.POST}
        urls = [settings.PUBLIC_BASE_URL + request.get_full_path(), request.build_absolute_uri()]
        if not conf.get("AUTH_TOKEN"):
            return error_response(
                "not_configured", "SMS_HTTP_AUTH_TOKEN is not set: inbound SMS cannot be verified.", 403
            )
        if not twilio_signature_valid(
            auth_token=conf["AUTH_TOKEN"],
            urls=urls,
            params=params,
            given=request.headers.get("X-Twilio-Signature", ""),
        ):
            return error_response("bad_signature", "X-Twilio-Signature is missing or does not match.", 403)
        keyword = sms_keyword(request.POST.get("Body", ""))
        try:
            number = phone_normalize(request.POST.get("From", ""))
        except ValidationError:
            return _twiml()  # not a number we could know: nothing to do
        if not keyword or not ContactPoint.objects.filter(channel=Channel.SMS, address=number).exists():
            return _twiml()
        inbound_sms_keyword_apply(number=number, keyword=keyword, provider=provider)
        return _twiml()


def inbound_sms_keyword_apply(*, number: str, keyword: str, provider: str) -> None:
    """Apply STOP / START / HELP from `number` and send the confirmation, in one transaction."""
    now = timezone.now()
    with transaction.atomic():
        holder = (
            ContactPoint.objects.filter(channel=Channel.SMS, address=number)
            .select_related("recipient")
            .order_by("recipient_id")
            .first()
        )
        if holder is None:
            return
        opt = KEYWORD_OPT.get(keyword)
        if opt is not None:
            opted_in, kind = opt
            contact_points_opt(
                channel=Channel.SMS,
                address=number,
                opted_in=opted_in,
                source=ChangeSource.PROVIDER,
                kind=kind,
                at=now,
                detail=f"{provider} inbound {keyword}",
            )
        text = consent_conf(f"SMS_{keyword}_TEXT")
        # A refusal (e.g. the help text fails the SMS lint after an edit) leaves the keyword applied.
        with contextlib.suppress(SendRefused):
            message_send(
                recipient=holder.recipient,
                channel=Channel.SMS,
                purpose=Purpose.TRANSACTIONAL,
                content={"body": text},
                source=Source.REPLY,
                source_ref=f"sms {keyword}",
                to=number,
                at=now,
            )


urlpatterns = [
    path("webhooks/<str:provider>/inbound/", InboundSmsView.as_view(), name="webhook-inbound"),
]
