"""Governor endpoints: cap rules, quiet hours, channel pauses and the dry run `governor/check/`."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.views import APIView

from orchestrator import limits
from orchestrator.api.fields import BoundedDateTimeField, DurationISOField
from orchestrator.models import Channel, Purpose, Recipient

from .models import (
    CapRule,
    ChannelPause,
    PauseMode,
    QuietHours,
    validate_channels,
    validate_exempt_purposes,
    validate_purposes,
)
from .services import PauseError, channel_pause, channel_resume, governor_check

# Cap rule limits fit the column with room to spare; nobody caps at more than a million per window.
CAP_LIMIT_MAX = 1_000_000


def _list_validated(value, validator):
    from django.core.exceptions import ValidationError as DjangoValidationError

    try:
        validator(value)
    except DjangoValidationError as exc:
        raise ValidationError(exc.messages) from exc
    return value


class CapRuleSerializer(serializers.ModelSerializer):
    limit = serializers.IntegerField(
        min_value=1,
        max_value=CAP_LIMIT_MAX,
        help_text=f"Messages allowed per window (1 to {CAP_LIMIT_MAX:,}).",
    )
    window = DurationISOField(help_text="Rolling window, ISO 8601 (PT4H, P1D); at most P365D.")
    channels = serializers.JSONField(required=False, help_text="Channels the rule covers; empty: all.")
    purposes = serializers.JSONField(help_text="Purposes that count against the rule and are limited by it.")

    class Meta:
        model = CapRule
        fields = [
            "id",
            "name",
            "limit",
            "window",
            "channels",
            "purposes",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_channels(self, value):
        return _list_validated(value, validate_channels)

    def validate_purposes(self, value):
        return _list_validated(value, validate_purposes)


@extend_schema_field(
    {"type": "string", "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$", "example": "21:00"}
)
class LocalTimeField(serializers.TimeField):
    """A wall-clock time, `HH:MM` out, `HH:MM` or `HH:MM:SS` in (no offset: each recipient's own zone)."""

    def __init__(self, **kwargs):
        super().__init__(format="%H:%M", input_formats=["%H:%M", "%H:%M:%S"], **kwargs)


class QuietHoursSerializer(serializers.ModelSerializer):
    start = LocalTimeField()
    end = LocalTimeField()
    channels = serializers.JSONField(required=False, help_text="Channels kept quiet; empty: all.")
    exempt_purposes = serializers.JSONField(required=False, help_text="Purposes that may still go out.")

    class Meta:
        model = QuietHours
        fields = [
            "id",
            "name",
            "channels",
            "start",
            "end",
            "exempt_purposes",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_channels(self, value):
        return _list_validated(value, validate_channels)

    def validate_exempt_purposes(self, value):
        return _list_validated(value, validate_exempt_purposes)

    def validate(self, attrs):
        start = attrs.get("start", getattr(self.instance, "start", None))
        end = attrs.get("end", getattr(self.instance, "end", None))
        if start is not None and start == end:
            raise ValidationError({"end": ["Quiet hours must end at a different time than they start."]})
        return attrs


class CapRuleViewSet(viewsets.ModelViewSet):
    """Cap rules: every enabled rule applies (AND); the most restrictive decides."""

    queryset = CapRule.objects.order_by("pk")
    serializer_class = CapRuleSerializer
    scope_read, scope_write = "governor:read", "governor:write"


class QuietHoursViewSet(viewsets.ModelViewSet):
    """Quiet hours, in each recipient's own time zone."""

    queryset = QuietHours.objects.order_by("pk")
    serializer_class = QuietHoursSerializer
    scope_read, scope_write = "governor:read", "governor:write"


class ChannelPauseSerializer(serializers.ModelSerializer):
    active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ChannelPause
        fields = [
            "id",
            "channel",
            "mode",
            "note",
            "active",
            "paused_by",
            "paused_at",
            "resumed_by",
            "resumed_at",
        ]
        read_only_fields = ["id", "active", "paused_by", "paused_at", "resumed_by", "resumed_at"]


class ChannelPauseViewSet(viewsets.GenericViewSet):
    """Pause a channel (`mode`: defer holds its messages until resumed, suppress drops them) and resume it."""

    queryset = ChannelPause.objects.order_by("-paused_at", "-pk")
    serializer_class = ChannelPauseSerializer
    required = {
        "list": ("governor:read", "governor.view_channelpause"),
        "create": ("governor:write", "governor.add_channelpause"),
        "resume": ("governor:write", "governor.change_channelpause"),
    }
    lookup_field = "channel"

    def list(self, request):
        qs = self.get_queryset()
        if request.query_params.get("active") in ("1", "true"):
            qs = qs.filter(resumed_at__isnull=True)
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def create(self, request):
        """Pause a channel now (or change the mode of its active pause)."""
        incoming = self.get_serializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            pause = channel_pause(
                channel=incoming.validated_data["channel"],
                mode=incoming.validated_data.get("mode", PauseMode.DEFER),
                note=incoming.validated_data.get("note", ""),
                by=request.user.get_username(),
            )
        except PauseError as exc:
            raise ValidationError({exc.field: [exc.detail]}) from exc
        return Response(self.get_serializer(pause).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "ChannelResumed", {"channel": serializers.CharField(), "released": serializers.IntegerField()}
        ),
    )
    def resume(self, request, channel: str):
        """Resume a paused channel; the messages it held become due and are re-decided by the re-drive."""
        if channel not in Channel.values:
            raise ValidationError({"channel": [f"Unknown channel {channel!r}."]})
        get_object_or_404(ChannelPause, channel=channel, resumed_at__isnull=True)
        released = channel_resume(channel=channel, by=request.user.get_username())
        return Response({"channel": channel, "released": released})


class GovernorCheckSerializer(serializers.Serializer):
    recipient = serializers.CharField(max_length=200, help_text="The recipient's external_id.")
    channel = serializers.ChoiceField(choices=Channel.choices)
    purpose = serializers.ChoiceField(choices=Purpose.choices)
    priority = serializers.IntegerField(min_value=0, max_value=100, default=50)
    at = BoundedDateTimeField(required=False, help_text="When to judge; default now (within a year of now).")
    expires_at = BoundedDateTimeField(required=False, allow_null=True)

    def validate_at(self, value):
        now = timezone.now()
        if abs(value - now) > limits.CHECK_AT_RANGE:
            span = limits.duration_iso(limits.CHECK_AT_RANGE)
            raise ValidationError(f"at must be within {span} of now.")
        return value


class GovernorDecisionSerializer(serializers.Serializer):
    recipient = serializers.CharField()
    channel = serializers.CharField()
    purpose = serializers.CharField()
    priority = serializers.IntegerField()
    at = serializers.DateTimeField()
    status = serializers.CharField()
    rule = serializers.CharField()
    reason = serializers.CharField()
    deliver_after = serializers.DateTimeField(allow_null=True)
    used = serializers.IntegerField(allow_null=True, help_text="What the deciding (or tightest) cap counts.")
    limit = serializers.IntegerField(allow_null=True)
    window = DurationISOField(allow_null=True)
    next_slot = serializers.DateTimeField(allow_null=True, help_text="When it could go (deferred).")


class GovernorCheckView(APIView):
    """Dry run: the decision the governor would make for this message, with rule and reason; no writes."""

    required = {"POST": ("governor:read", "governor.view_caprule")}

    @extend_schema(request=GovernorCheckSerializer, responses=GovernorDecisionSerializer)
    def post(self, request):
        incoming = GovernorCheckSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        recipient = get_object_or_404(Recipient, external_id=data["recipient"])
        at = data.get("at") or timezone.now()
        decision = governor_check(
            recipient=recipient,
            channel=data["channel"],
            purpose=data["purpose"],
            priority=data["priority"],
            expires_at=data.get("expires_at"),
            at=at,
        )
        body = {
            "recipient": recipient.external_id,
            "channel": data["channel"],
            "purpose": data["purpose"],
            "priority": data["priority"],
            "at": at,
            **decision.as_dict(),
        }
        return Response(GovernorDecisionSerializer(body).data)


router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("cap-rules", CapRuleViewSet, basename="cap-rule")
router.register("quiet-hours", QuietHoursViewSet, basename="quiet-hours")

urlpatterns = [
    path("governor/check/", GovernorCheckView.as_view(), name="governor-check"),
    path(
        "channel-pauses/",
        ChannelPauseViewSet.as_view({"get": "list", "post": "create"}),
        name="channel-pause-list",
    ),
    path(
        "channel-pauses/<str:channel>/resume/",
        ChannelPauseViewSet.as_view({"post": "resume"}),
        name="channel-pause-resume",
    ),
    *router.urls,
]
