"""Conversation endpoints: recipients (upsert, get, patch), their history and timeline, and events."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db.models import Prefetch
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import erasure, limits, selectors, services
from ..authority import authorize
from ..models import (
    Channel,
    ContactPoint,
    IdempotencyKey,
    MessageStatus,
    Preference,
    Purpose,
    Recipient,
    ServiceToken,
)
from . import lists
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


def recipients_with_contacts():
    return Recipient.objects.prefetch_related(
        Prefetch("contact_points", queryset=ContactPoint.objects.order_by("channel", "address")),
        Prefetch("preferences", queryset=Preference.objects.order_by("channel", "purpose")),
    )


def recipient_get_or_404(external_id: str) -> Recipient:
    """A recipient by external id; an erased one is unknown (404) to the endpoints that read or write it."""
    return get_object_or_404(recipients_with_contacts(), external_id=external_id, erased_at__isnull=True)


IDEMPOTENCY_KEY_MAX = IdempotencyKey._meta.get_field("key").max_length
IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX, "pattern": "^[ -~]+$"},
    OpenApiParameter.HEADER,
    required=False,
    description="Repeat the request safely: the same key and body within 24 h return the first response.",
)


def idempotency_key(request) -> str | None:
    """The request's Idempotency-Key: 1-255 printable characters (a UUID is the usual choice)."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and (not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable()):
        raise ValidationError(
            {"Idempotency-Key": [f"1 to {IDEMPOTENCY_KEY_MAX} printable characters (e.g. a UUID)."]}
        )
    return key


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


def query_datetimes(request, *names: str) -> dict[str, datetime]:
    """ISO 8601 date-time query parameters; one given but unreadable is a 400 naming it. As filters, values
    beyond the supported range (orchestrator.limits) are clamped to it: the answer is the same, and the
    database never sees a year it cannot store."""
    found = {}
    for name in names:
        raw = request.query_params.get(name)
        if raw is None:
            continue
        try:
            parsed = parse_datetime(raw)
        except ValueError:
            parsed = None
        if parsed is None:
            raise ValidationError({name: ["Expected an ISO 8601 date-time, e.g. 2026-03-02T10:00:00Z."]})
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, UTC)
        try:
            found[name] = min(max(parsed, limits.DATETIME_MIN), limits.DATETIME_MAX)
        except OverflowError:
            found[name] = limits.DATETIME_MIN if parsed.year < 2000 else limits.DATETIME_MAX
    return found


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
    """Recipients by external id: list, upsert, read, patch (incl. preferences), erase, history, timeline."""

    serializer_class = RecipientSerializer
    required = {
        "list": ("recipients:read", "orchestrator.view_recipient"),
        "destroy": ("recipients:erase", "orchestrator.erase_recipient"),
        "create": ("recipients:write", "orchestrator.change_recipient"),
        "partial_update": ("recipients:write", "orchestrator.change_recipient"),
        "retrieve": ("recipients:read", "orchestrator.view_recipient"),
        "messages": ("recipients:read", "orchestrator.view_message"),
        "timeline": ("recipients:read", "orchestrator.view_message"),
    }
    lookup_field = "external_id"
    lookup_value_regex = "[^/]+"
    queryset = Recipient.objects.all()
    schema = lists.CursorListSchema()

    @property
    def pagination_class(self):
        # The list pages by cursor (it may be millions long); a recipient's history keeps its page numbers;
        # an action may set its own (the timeline: none).
        if "_pagination_class" in self.__dict__:
            return self.__dict__["_pagination_class"]
        return lists.KeysetCursorPagination if self.action == "list" else PageNumberPagination

    @pagination_class.setter
    def pagination_class(self, value) -> None:
        self.__dict__["_pagination_class"] = value

    def get_object(self) -> Recipient:
        return recipient_get_or_404(self.kwargs["external_id"])

    @extend_schema(
        responses=RecipientSerializer(many=True),
        parameters=lists.RECIPIENT_LIST_PARAMETERS,
        filters=False,
    )
    def list(self, request):
        """Every (not erased) recipient, newest first, cursor-paginated; filters by attribute, time zone,
        locale and creation time."""
        qs = lists.list_filter(
            request,
            recipients_with_contacts().filter(erased_at__isnull=True),
            lists.RecipientFilter,
            lists.RECIPIENT_RANGES,
        )
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(RecipientSerializer(page, many=True).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, external_id: str):
        """Erase the person (the right to erasure): contact points, preferences, attributes, event
        properties and message content go; their messages, decisions and enrollments stay, anonymised,
        under a new anonymous id, so reports still add up. Audited. Not reversible."""
        recipient = get_object_or_404(Recipient, external_id=external_id, erased_at__isnull=True)
        token = getattr(request, "auth", None)
        via = f"api: token {token.name}" if isinstance(token, ServiceToken) else "api"
        try:
            erasure.recipient_erase(recipient=recipient, actor=request.user, at=timezone.now(), via=via)
        except erasure.AlreadyErased as exc:  # a concurrent erasure of the same person won
            raise Http404("No such recipient.") from exc
        return Response(status=status.HTTP_204_NO_CONTENT)

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
        try:
            services.recipient_upsert(external_id=recipient.external_id, create=False, **_upsert_kwargs(data))
        except Recipient.DoesNotExist as exc:  # erased (renamed) since it was read: unknown now
            raise Http404("No such recipient.") from exc
        return Response(RecipientSerializer(recipient_get_or_404(recipient.external_id)).data)

    @extend_schema(
        responses=MessageSerializer(many=True),
        parameters=[
            OpenApiParameter("channel", str, many=True, enum=Channel.values),
            OpenApiParameter("status", str, many=True, enum=MessageStatus.values),
            OpenApiParameter("purpose", str, many=True, enum=Purpose.values),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601 date-time, inclusive"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601 date-time, exclusive"),
        ],
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def messages(self, request, external_id: str):
        """The unified cross-channel history, newest first."""
        recipient = get_object_or_404(Recipient, external_id=external_id)
        bounds = query_datetimes(request, "since", "until")
        qs = selectors.recipient_messages(recipient=recipient, **bounds).select_related("recipient")
        params = request.query_params.copy()
        for name in bounds:
            params.pop(name, None)
        filterset = MessageFilter(params, queryset=qs)
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        page = self.paginate_queryset(filterset.qs)
        return self.get_paginated_response(MessageSerializer(page, many=True).data)

    @extend_schema(
        responses=TimelineEntrySerializer(many=True),
        parameters=[
            OpenApiParameter("since", OpenApiTypes.DATETIME),
            OpenApiParameter("until", OpenApiTypes.DATETIME),
            OpenApiParameter(
                "limit", {"type": "integer", "minimum": 1, "maximum": 500}, description="Default 100."
            ),
        ],
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def timeline(self, request, external_id: str):
        """Messages and events interleaved in time order, newest first."""
        recipient = get_object_or_404(Recipient, external_id=external_id)
        bounds = query_datetimes(request, "since", "until")
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 500:
            raise ValidationError({"limit": ["Expected a whole number from 1 to 500."]})
        entries = selectors.recipient_timeline(recipient=recipient, limit=limit, **bounds)
        data = [{"kind": e.kind, "at": e.at, "message": e.message, "event": e.event} for e in entries]
        return Response(TimelineEntrySerializer(data, many=True).data)


class EventCreateView(APIView):
    """Ingest a product event; refuses unknown recipients unless `create_recipient` is true."""

    required = {"POST": ("events", "orchestrator.add_event")}

    @extend_schema(
        request=EventWriteSerializer, responses={201: EventSerializer}, parameters=[IDEMPOTENCY_KEY_PARAMETER]
    )
    def post(self, request):
        def act():
            incoming = EventWriteSerializer(data=request.data)
            incoming.is_valid(raise_exception=True)
            data = incoming.validated_data
            recipient = Recipient.objects.filter(
                external_id=data["recipient"], erased_at__isnull=True
            ).first()
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
