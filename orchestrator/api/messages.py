"""POST messages/ (the send pipeline, Idempotency-Key honoured), POST messages/record/ (a send made
elsewhere, recorded into the history) and GET messages/{id}/."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from channels_app.limits import BODY_MAX_CHARS, HEAD_MAX_CHARS
from channels_app.models import DeliveryAttempt

from ..authority import authorize
from ..db import is_postgres
from ..limits import MAX_SCHEDULE_AHEAD, MAX_URL_CHARS
from ..models import AUTO_CHANNEL, Channel, Message, Purpose, Recipient
from ..pipeline import SendRefused, message_send
from ..recording import RecordInvalid, message_record, record_request_parse
from ..selectors import recipient_hold
from . import lists
from .fields import BoundedDateTimeField
from .permissions import scope_require
from .serializers import MessageDecisionSerializer, MessageSerializer
from .views import IDEMPOTENCY_KEY_PARAMETER, idempotent_response


class ContentSerializer(serializers.Serializer):
    subject = serializers.CharField(required=False, allow_blank=True, max_length=HEAD_MAX_CHARS)
    title = serializers.CharField(required=False, allow_blank=True, max_length=HEAD_MAX_CHARS)
    body = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=max(BODY_MAX_CHARS.values()),
        help_text="Per channel at most: "
        + ", ".join(f"{ch} {n:,}" for ch, n in BODY_MAX_CHARS.items())
        + " characters (docs/limits.md).",
    )
    action_url = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=MAX_URL_CHARS,
        help_text="http(s), a configured app scheme (app://...) or a path starting with /.",
    )

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        # Extra keys (e.g. a second action) are kept so the channel lint can judge them.
        if isinstance(data, dict):
            value.update({k: v for k, v in data.items() if k not in value})
        return value


class MessageCreateSerializer(serializers.Serializer):
    recipient = serializers.CharField(max_length=200)
    channel = serializers.ChoiceField(choices=[*Channel.values, AUTO_CHANNEL])
    purpose = serializers.ChoiceField(choices=Purpose.choices)
    content = ContentSerializer(required=False)
    template = serializers.CharField(
        required=False,
        max_length=100,
        help_text="A template key, instead of content: rendered in the pipeline.",
    )
    data = serializers.DictField(required=False, help_text="The template's variables ({{ data.* }}).")
    priority = serializers.IntegerField(min_value=0, max_value=100, default=50)
    expires_at = BoundedDateTimeField(
        required=False, allow_null=True, ahead=MAX_SCHEDULE_AHEAD, help_text="At most P365D ahead."
    )
    deliver_after = BoundedDateTimeField(
        required=False,
        allow_null=True,
        ahead=MAX_SCHEDULE_AHEAD,
        help_text="At most P365D ahead, and not after expires_at.",
    )
    to = serializers.CharField(
        max_length=512,
        required=False,
        allow_blank=False,
        help_text="A specific contact point of the recipient (push token, phone, email); default: all/first.",
    )
    source_ref = serializers.CharField(required=False, allow_blank=True, max_length=200)

    def validate(self, attrs):
        if ("content" in attrs) == ("template" in attrs):
            raise serializers.ValidationError(
                {"content": ["Give content, or a template (with data), not both."]}
            )
        if "data" in attrs and "template" not in attrs:
            raise serializers.ValidationError({"data": ["data goes with a template."]})
        return attrs


class MessageSendResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = [
            "id",
            "status",
            "channel",
            "reason",
            "rule",
            "deliver_after",
            "expires_at",
            "warnings",
            "channel_reason",
        ]


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "provider",
            "started_at",
            "finished_at",
            "outcome",
            "provider_message_id",
            "response",
        ]


class MessageDetailSerializer(MessageSerializer):
    attempts_detail = DeliveryAttemptSerializer(source="delivery_attempts", many=True, read_only=True)
    decisions = MessageDecisionSerializer(
        many=True, read_only=True, help_text="Every decision, oldest first."
    )

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "decisions", "attempts_detail"]


def refusal_body(exc: SendRefused) -> dict:
    """400 body: {field: [reason, ...]} plus the stable codes under `codes`."""
    body: dict = {field: [e["detail"] for e in errs] for field, errs in exc.errors.items()}
    body["codes"] = sorted({e["code"] for errs in exc.errors.values() for e in errs})
    return body


class MessageCreateView(APIView):
    """Send one message through the pipeline (the response carries the governor's decision), or list
    messages across recipients."""

    required = {
        "POST": ("send", "orchestrator.send_message"),
        "GET": ("messages:read", "orchestrator.view_message"),
    }
    pagination_class = lists.KeysetCursorPagination
    schema = lists.CursorListSchema()

    @extend_schema(
        responses=MessageSerializer(many=True),
        parameters=lists.MESSAGE_LIST_PARAMETERS,
        filters=False,
    )
    def get(self, request):
        """Every message, newest first, cursor-paginated; the recipient history's filters plus recipient
        (external id), journey (slug) and sent / accepted ranges."""
        paginator = lists.KeysetCursorPagination()
        qs = lists.list_filter(
            request, lists.messages_list_queryset(), lists.MessageListFilter, lists.MESSAGE_RANGES
        )
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(MessageSerializer(page, many=True).data)

    @extend_schema(
        request=MessageCreateSerializer,
        responses={201: MessageSendResultSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request):
        def act():
            incoming = MessageCreateSerializer(data=request.data)
            incoming.is_valid(raise_exception=True)
            data = incoming.validated_data
            held = None
            if data["channel"] != AUTO_CHANNEL and data.get("template") is None and is_postgres():
                # The hot path: the recipient found by external id, locked, and read with their reachability
                # and opt-out in one statement (a template needs the whole row: locale, attributes).
                held = recipient_hold(
                    external_id=data["recipient"], channel=data["channel"], purpose=data["purpose"]
                )
                recipient = held.as_recipient() if held is not None else None
            else:
                recipient = Recipient.objects.filter(external_id=data["recipient"]).first()
            if recipient is None:
                raise NotFound(f"No recipient with external_id {data['recipient']!r}.")
            try:
                message = message_send(
                    recipient=recipient,
                    channel=data["channel"],
                    purpose=data["purpose"],
                    content=data.get("content"),
                    template=data.get("template"),
                    data=data.get("data"),
                    priority=data["priority"],
                    expires_at=data.get("expires_at"),
                    deliver_after=data.get("deliver_after"),
                    to=data.get("to"),
                    source_ref=data.get("source_ref", ""),
                    held=held,
                )
            except SendRefused as exc:
                raise ValidationError(refusal_body(exc)) from exc
            return status.HTTP_201_CREATED, MessageSendResultSerializer(message).data

        return idempotent_response(request, "messages", act)


class MessageDetailView(APIView):
    required = {"GET": ("recipients:read", "orchestrator.view_message")}

    @extend_schema(responses=MessageDetailSerializer)
    def get(self, request, pk: int):
        message = get_object_or_404(
            Message.objects.select_related("recipient").prefetch_related("delivery_attempts", "decisions"),
            pk=pk,
        )
        return Response(MessageDetailSerializer(message).data)


# The schema of POST messages/record/; the view validates with recording.record_request_parse (the import's
# validation too), so this serializer only documents the body.
class MessageRecordSerializer(serializers.Serializer):
    """A send another system already made."""

    recipient = serializers.CharField(max_length=200, help_text="The recipient's external id.")
    channel = serializers.ChoiceField(choices=Channel.values, help_text="The channel it went out on.")
    purpose = serializers.ChoiceField(choices=Purpose.values)
    sent_at = serializers.DateTimeField(help_text="When the other system sent it (not in the future).")
    source_system = serializers.CharField(max_length=100, help_text="Which system sent it, e.g. `braze`.")
    external_id = serializers.CharField(max_length=255, help_text="Its id in that system (unique there).")
    content = ContentSerializer(required=False, help_text="A summary of what was sent (or a string).")
    status = serializers.ChoiceField(
        choices=["sent", "delivered"], required=False, help_text="`sent` unless delivered_at is given."
    )
    delivered_at = serializers.DateTimeField(required=False)
    create_recipient = serializers.BooleanField(required=False, default=False)
    timezone = serializers.CharField(max_length=64, required=False, help_text="Used with create_recipient.")


class RecordedMessageSerializer(serializers.ModelSerializer):
    recipient = serializers.SlugRelatedField(slug_field="external_id", read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "recipient",
            "channel",
            "purpose",
            "status",
            "source",
            "source_system",
            "external_id",
            "sent_at",
            "delivered_at",
            "recorded_at",
            "content",
            "warnings",
        ]


class MessageRecordView(APIView):
    """Record a send another system already made: counted by the governor from its sent time, shown on
    the timeline, linted (warnings only). Idempotent on (source_system, external_id): a repeat returns the
    first record with 200. Nothing is delivered."""

    required = {"POST": ("send", "orchestrator.send_message")}

    @extend_schema(
        request=MessageRecordSerializer,
        responses={201: RecordedMessageSerializer, 200: RecordedMessageSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request):
        def act():
            now = timezone.now()
            try:
                record = record_request_parse(request.data, now=now)
            except RecordInvalid as exc:
                raise ValidationError(exc.errors) from exc
            if (
                record.create_recipient
                and not Recipient.objects.filter(external_id=record.recipient).exists()
            ):
                # Creating a recipient is a recipients:write act, whatever endpoint carries it.
                scope_require(request, "recipients:write")
                authorize(request.user, "orchestrator.add_recipient")
            try:
                message, created = message_record(request=record, at=now)
            except RecordInvalid as exc:
                raise ValidationError(exc.errors) from exc
            code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
            return code, RecordedMessageSerializer(message).data

        return idempotent_response(request, "messages-record", act)


urlpatterns = [
    path("messages/", MessageCreateView.as_view(), name="message-create"),
    path("messages/record/", MessageRecordView.as_view(), name="message-record"),
    path("messages/<int:pk>/", MessageDetailView.as_view(), name="message-detail"),
]
