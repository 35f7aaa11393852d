"""Conversation endpoints: recipients (upsert, get, patch), their history and timeline, and events."""

from __future__ import annotations

from django.db.models import Prefetch
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import selectors, services
from ..authority import authorize
from ..models import ContactPoint, Preference, Recipient
from .errors import Conflict
from .filters import MessageFilter
from .permissions import scope_require
from .serializers import (
    EventSerializer,
    EventWriteSerializer,
    MessageSerializer,
    RecipientSerializer,
    RecipientWriteSerializer,
    TimelineEntrySerializer,
)


def recipient_get_or_404(external_id: str) -> Recipient:
    return get_object_or_404(
        Recipient.objects.prefetch_related(
            Prefetch("contact_points", queryset=ContactPoint.objects.order_by("channel", "address")),
            Prefetch("preferences", queryset=Preference.objects.order_by("channel", "purpose")),
        ),
        external_id=external_id,
    )


def idempotency_key(request) -> str | None:
    return request.headers.get("Idempotency-Key") or None


def idempotent_response(request, scope: str, action) -> Response:
    """Run `action` (returning (status, body)) honouring the request's Idempotency-Key."""
    try:
        # Keys belong to the caller (as Stripe's belong to an account): two services may pick the same one.
        code, body, replayed = services.idempotent_call(
            scope=f"{scope}:{request.user.pk}", key=idempotency_key(request), body=request.data, action=action
        )
    except services.IdempotencyConflict as exc:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_conflict",
        ) from exc
    response = Response(body, status=code)
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def _upsert_kwargs(data: dict) -> dict:
    return {
        "timezone_name": data.get("timezone"),
        "locale": data.get("locale"),
        "attributes": data.get("attributes"),
        "email": data.get("email"),
        "phone": data.get("phone"),
        "push_tokens": data.get("push_tokens"),
        "in_app": data.get("in_app"),
        "preferences": data.get("preferences"),
    }


class RecipientViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Recipients by external id: upsert, read, patch (incl. preferences), history and timeline."""

    serializer_class = RecipientSerializer
    required = {
        "create": ("recipients:write", "orchestrator.change_recipient"),
        "partial_update": ("recipients:write", "orchestrator.change_recipient"),
        "retrieve": ("recipients:read", "orchestrator.view_recipient"),
        "messages": ("recipients:read", "orchestrator.view_message"),
        "timeline": ("recipients:read", "orchestrator.view_message"),
    }
    lookup_field = "external_id"
    lookup_value_regex = "[^/]+"
    queryset = Recipient.objects.all()

    def get_object(self) -> Recipient:
        return recipient_get_or_404(self.kwargs["external_id"])

    @extend_schema(
        request=RecipientWriteSerializer, responses={200: RecipientSerializer, 201: RecipientSerializer}
    )
    def create(self, request):
        """Create or update (upsert) by external_id; 201 when created, 200 otherwise."""
        incoming = RecipientWriteSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        if not data.get("external_id"):
            raise ValidationError({"external_id": ["external_id is required."]})
        result = services.recipient_upsert(external_id=data["external_id"], **_upsert_kwargs(data))
        body = RecipientSerializer(recipient_get_or_404(result.recipient.external_id)).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    @extend_schema(request=RecipientWriteSerializer, responses=RecipientSerializer)
    def partial_update(self, request, external_id: str):
        recipient = self.get_object()
        incoming = RecipientWriteSerializer(data=request.data, partial=True)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        if data.get("external_id") not in (None, recipient.external_id):
            raise ValidationError({"external_id": ["external_id cannot be changed."]})
        services.recipient_upsert(external_id=recipient.external_id, create=False, **_upsert_kwargs(data))
        return Response(RecipientSerializer(recipient_get_or_404(recipient.external_id)).data)

    @extend_schema(
        responses=MessageSerializer(many=True),
        parameters=[
            OpenApiParameter("channel", str, many=True),
            OpenApiParameter("status", str, many=True),
            OpenApiParameter("purpose", str, many=True),
            OpenApiParameter("since", str, description="ISO 8601 date-time, inclusive"),
            OpenApiParameter("until", str, description="ISO 8601 date-time, exclusive"),
        ],
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def messages(self, request, external_id: str):
        """The unified cross-channel history, newest first."""
        recipient = get_object_or_404(Recipient, external_id=external_id)
        qs = selectors.recipient_messages(recipient=recipient).select_related("recipient")
        filterset = MessageFilter(request.query_params, queryset=qs)
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        page = self.paginate_queryset(filterset.qs)
        return self.get_paginated_response(MessageSerializer(page, many=True).data)

    @extend_schema(
        responses=TimelineEntrySerializer(many=True),
        parameters=[
            OpenApiParameter("since", str),
            OpenApiParameter("until", str),
            OpenApiParameter("limit", int, description="At most 500; default 100."),
        ],
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def timeline(self, request, external_id: str):
        """Messages and events interleaved in time order, newest first."""
        recipient = get_object_or_404(Recipient, external_id=external_id)
        bounds = {}
        for name in ("since", "until"):
            raw = request.query_params.get(name)
            if raw:
                parsed = parse_datetime(raw)
                if parsed is None:
                    raise ValidationError({name: ["Expected an ISO 8601 date-time."]})
                bounds[name] = parsed
        try:
            limit = min(max(int(request.query_params.get("limit", 100)), 1), 500)
        except ValueError as exc:
            raise ValidationError({"limit": ["Expected a whole number."]}) from exc
        entries = selectors.recipient_timeline(recipient=recipient, limit=limit, **bounds)
        data = [{"kind": e.kind, "at": e.at, "message": e.message, "event": e.event} for e in entries]
        return Response(TimelineEntrySerializer(data, many=True).data)


class EventCreateView(APIView):
    """Ingest a product event; refuses unknown recipients unless `create_recipient` is true."""

    required = {"POST": ("events", "orchestrator.add_event")}

    @extend_schema(request=EventWriteSerializer, responses={201: EventSerializer})
    def post(self, request):
        def act():
            incoming = EventWriteSerializer(data=request.data)
            incoming.is_valid(raise_exception=True)
            data = incoming.validated_data
            recipient = Recipient.objects.filter(external_id=data["recipient"]).first()
            if recipient is None:
                if data["create_recipient"]:
                    # Creating a recipient is a recipients:write act, whatever endpoint carries it.
                    scope_require(request, "recipients:write")
                    authorize(request.user, "orchestrator.add_recipient")
                else:
                    raise Http404(
                        f"No recipient with external_id {data['recipient']!r}; "
                        'create it first or send "create_recipient": true.'
                    )
                recipient = services.recipient_upsert(
                    external_id=data["recipient"], timezone_name=data.get("timezone")
                ).recipient
            event = services.event_ingest(
                recipient=recipient,
                name=data["name"],
                properties=data.get("properties"),
                occurred_at=data.get("occurred_at"),
            )
            return status.HTTP_201_CREATED, EventSerializer(event).data

        return idempotent_response(request, "events", act)
