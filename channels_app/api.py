"""Channel endpoints: engagement receipts, provider webhooks and the in-app inbox."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import transaction
from django.http import QueryDict
from django.shortcuts import get_object_or_404
from django.urls import include, path
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator.api.errors import error_response
from orchestrator.models import Message, Recipient

from .services import ReceiptType, inbox_messages_deliver, message_receipt_apply
from .webhooks import PROVIDERS, WebhookMalformed


class ReceiptSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=ReceiptType.ALL)
    occurred_at = serializers.DateTimeField(required=False, allow_null=True)
    detail = serializers.CharField(required=False, allow_blank=True, max_length=500)


class ReceiptResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    applied = serializers.BooleanField()
    detail = serializers.CharField()


def _result(r) -> dict:
    return {"id": r.message.pk, "status": r.message.status, "applied": r.applied, "detail": r.detail}


class MessageEventView(APIView):
    """An engagement receipt for one message; late or out-of-order receipts never move it back."""

    required = {"POST": ("receipts", "orchestrator.receipt_message")}

    @extend_schema(request=ReceiptSerializer, responses=ReceiptResultSerializer)
    def post(self, request, pk: int):
        incoming = ReceiptSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        get_object_or_404(Message.objects.only("pk"), pk=pk)
        result = message_receipt_apply(
            message_id=pk,
            type=data["type"],
            occurred_at=data.get("occurred_at"),
            detail=data.get("detail", ""),
        )
        return Response(_result(result))


class WebhookPermission(permissions.BasePermission):
    """Only the provider's own shared secret (?token= or X-Webhook-Token), never an API or service token:
    a leaked service token must not let anyone forge bounces."""

    message = "Provider webhooks accept only the provider's own shared secret (CHANNEL_WEBHOOK_TOKENS)."

    def has_permission(self, request, view) -> bool:
        if view.kwargs.get("provider", "") not in PROVIDERS:
            return True  # the view answers 404 for an unknown provider
        expected = settings.CHANNELS.get("WEBHOOK_TOKENS", {}).get(view.kwargs.get("provider", ""))
        given = request.headers.get("X-Webhook-Token") or request.query_params.get("token") or ""
        return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


class WebhookView(APIView):
    """Provider delivery receipts. Unknown provider → 404; malformed body → 400; a receipt for an
    unknown message → 404. All receipts of one call apply together or not at all."""

    # No API authentication at all here: a token header is neither read nor enough.
    authentication_classes: list = []
    permission_classes = [WebhookPermission]

    @extend_schema(
        request=inline_serializer("WebhookBody", {"any": serializers.JSONField(required=False)}),
        responses=inline_serializer(
            "WebhookResult",
            {"provider": serializers.CharField(), "results": ReceiptResultSerializer(many=True)},
        ),
        description=f"Providers: {', '.join(sorted(PROVIDERS))}.",
    )
    def post(self, request, provider: str):
        parse = PROVIDERS.get(provider)
        if parse is None:
            raise NotFound(f"Unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}.")
        data = request.data
        if isinstance(data, QueryDict):
            data = data.dict()
        try:
            receipts = parse(data)
        except WebhookMalformed as exc:
            return error_response("malformed_receipt", str(exc))
        except Exception as exc:  # noqa: BLE001 - a malformed body is the sender's problem, never a 500
            return error_response("malformed_receipt", f"Unreadable body ({type(exc).__name__}).")
        with transaction.atomic():
            targets = []
            for receipt in receipts:
                qs = Message.objects.all()
                if receipt.message_id is not None:
                    qs = qs.filter(pk=receipt.message_id)
                else:
                    qs = qs.filter(provider_message_id=receipt.provider_message_id)
                    if receipt.provider:
                        qs = qs.filter(provider=receipt.provider)
                message_id = qs.order_by("-id").values_list("pk", flat=True).first()
                if message_id is None:
                    ref = receipt.message_id or receipt.provider_message_id
                    raise NotFound(f"No message for receipt {ref!r}.")
                targets.append((message_id, receipt))
            results = [
                message_receipt_apply(
                    message_id=message_id, type=r.type, occurred_at=r.occurred_at, detail=r.detail
                )
                for message_id, r in targets
            ]
        return Response({"provider": provider, "results": [_result(r) for r in results]})


class InboxMessageSerializer(serializers.ModelSerializer):
    title = serializers.SerializerMethodField()
    body = serializers.SerializerMethodField()
    action_url = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = ["id", "purpose", "title", "body", "action_url", "sent_at", "delivered_at", "expires_at"]

    def get_title(self, obj: Message) -> str:
        return (obj.content or {}).get("title", "")

    def get_body(self, obj: Message) -> str:
        return (obj.content or {}).get("body", "")

    def get_action_url(self, obj: Message) -> str:
        return (obj.content or {}).get("action_url", "")


class InboxView(APIView):
    """In-app messages waiting for this visit; showing them marks them delivered."""

    required = {"GET": ("inbox", "orchestrator.inbox_recipient")}

    @extend_schema(
        responses=InboxMessageSerializer(many=True),
        parameters=[OpenApiParameter("external_id", str, OpenApiParameter.PATH)],
    )
    def get(self, request, external_id: str):
        recipient = get_object_or_404(Recipient, external_id=external_id)
        shown = inbox_messages_deliver(recipient=recipient)
        return Response(InboxMessageSerializer(shown, many=True).data)


urlpatterns = [
    path("", include("channels_app.template_api")),
    path("messages/<int:pk>/events/", MessageEventView.as_view(), name="message-events"),
    path("webhooks/<str:provider>/", WebhookView.as_view(), name="webhook"),
    path("recipients/<str:external_id>/inbox/", InboxView.as_view(), name="recipient-inbox"),
]
