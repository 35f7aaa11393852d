"""Journeys API (CONTRACT.md): definitions and their lifecycle, enrollments, and the report."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import include, path
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator.api.fields import DurationISOField
from orchestrator.authority import Denied, authorize, user_channels
from orchestrator.models import Recipient

from . import reports, selectors, services
from .definition import DefinitionInvalid
from .models import Enrollment, Journey

ACTIONS = tuple(services.TRANSITIONS)


class JourneySerializer(serializers.ModelSerializer):
    reentry_cooldown = DurationISOField(read_only=True, allow_null=True)
    # Plain strings in the schema: the shared enum names (status, channel) belong to the conversation.
    status = serializers.CharField(
        read_only=True, help_text="draft, proposed, approved, active, paused, archived"
    )
    owner_channel = serializers.CharField(read_only=True)
    reentry = serializers.CharField(read_only=True, help_text="never, after_exit or cooldown")
    version = serializers.SerializerMethodField()
    live_version = serializers.IntegerField(source="live_version.number", read_only=True, default=None)
    definition = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()

    class Meta:
        model = Journey
        fields = [
            "slug",
            "name",
            "owner_channel",
            "status",
            "version",
            "live_version",
            "trigger_event",
            "reentry",
            "reentry_cooldown",
            "definition",
            "counts",
            "created_at",
            "updated_at",
        ]

    def _latest(self, obj: Journey):
        if not hasattr(obj, "_latest_version"):
            obj._latest_version = services.journey_latest_version(journey=obj)
        return obj._latest_version

    def get_version(self, obj: Journey) -> int:
        return self._latest(obj).number

    def get_definition(self, obj: Journey) -> dict:
        return self._latest(obj).definition

    def get_counts(self, obj: Journey) -> dict[str, int]:
        return selectors.journey_counts(journey=obj)


class EnrollmentSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True, help_text="active, converted or exited")
    trigger = serializers.CharField(read_only=True, help_text="event, api or admin")
    waiting = serializers.CharField(read_only=True, help_text="'', time, event or message")
    recipient = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    journey = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)

    class Meta:
        model = Enrollment
        fields = [
            "id",
            "journey",
            "version",
            "recipient",
            "status",
            "trigger",
            "step_id",
            "waiting",
            "next_run_at",
            "entered_at",
            "ended_at",
            "exit_reason",
            "converted_at",
            "held_out",
            "holdout_share",
        ]


class EnrollmentCreateSerializer(serializers.Serializer):
    recipient = serializers.CharField(max_length=200)


def _definition_error(exc: DefinitionInvalid) -> Response:
    return Response(exc.as_response(), status=status.HTTP_400_BAD_REQUEST)


def _conflict(exc: services.JourneyConflict) -> Response:
    return Response({"code": exc.code, "detail": exc.detail}, status=status.HTTP_409_CONFLICT)


def journey_get_or_404(slug: str, *, user=None, perm: str = "journeys.view_journey") -> Journey:
    """The journey, after the object check: a channel owner never reads another team's draft (403)."""
    journey = get_object_or_404(Journey.objects.select_related("live_version"), slug=slug)
    authorize(user, perm, journey)
    return journey


class ActionSerializer(serializers.Serializer):
    comment = serializers.CharField(
        required=False, allow_blank=True, max_length=5000, help_text="approve/reject: the reviewer's note."
    )


class JourneyListView(APIView):
    """List journeys (those the caller may read), or create one (a draft) from a definition."""

    required = {
        "GET": ("journeys:read", "journeys.view_journey"),
        "POST": ("journeys:write", "journeys.add_journey"),
    }

    @extend_schema(responses=JourneySerializer(many=True))
    def get(self, request):
        journeys = selectors.journeys_visible(user=request.user).select_related("live_version")
        return Response(JourneySerializer(journeys.order_by("slug"), many=True).data)

    @extend_schema(request=dict, responses={201: JourneySerializer})
    def post(self, request):
        if not isinstance(request.data, dict):
            return Response(
                {"code": "invalid", "detail": "Expected a journey definition: a JSON object."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            journey = services.journey_create(definition=request.data, now=timezone.now(), user=request.user)
        except DefinitionInvalid as exc:
            return _definition_error(exc)
        except services.JourneyConflict as exc:
            return _conflict(exc)
        return Response(JourneySerializer(journey).data, status=status.HTTP_201_CREATED)


class JourneyDetailView(APIView):
    """One journey; PATCH edits the draft (a new version if the previous one was approved)."""

    required = {
        "GET": ("journeys:read", "journeys.view_journey"),
        "PATCH": ("journeys:write", "journeys.change_journey"),
    }

    @extend_schema(responses=JourneySerializer)
    def get(self, request, slug: str):
        return Response(JourneySerializer(journey_get_or_404(slug, user=request.user)).data)

    @extend_schema(request=dict, responses=JourneySerializer)
    def patch(self, request, slug: str):
        journey = journey_get_or_404(slug, user=request.user)
        if not isinstance(request.data, dict):
            return Response(
                {"code": "invalid", "detail": "Expected a JSON object of definition changes."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            services.journey_update(
                journey=journey, changes=request.data, now=timezone.now(), user=request.user
            )
        except DefinitionInvalid as exc:
            return _definition_error(exc)
        except services.JourneyConflict as exc:
            return _conflict(exc)
        return Response(JourneySerializer(journey_get_or_404(slug, user=request.user)).data)


class JourneyActionView(APIView):
    """POST journeys/{slug}/{action}/: propose, approve, reject, activate, pause, archive (and revise).
    approve and reject take an optional `comment` the proposer reads."""

    required = {"POST": ("journeys:write", "journeys.view_journey")}

    @extend_schema(request=ActionSerializer, responses=JourneySerializer, operation_id="journeys_action")
    def post(self, request, slug: str, action: str):
        if action not in ACTIONS:
            raise NotFound(f"Unknown action {action!r}; expected one of {', '.join(ACTIONS)}.")
        if not isinstance(request.data, dict):
            return Response(
                {"code": "invalid", "detail": 'Expected a JSON object such as {"comment": "..."}.'},
                status=status.HTTP_400_BAD_REQUEST,
            )
        incoming = ActionSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        journey = journey_get_or_404(slug, user=request.user)
        try:
            journey = services.journey_transition(
                journey=journey,
                action=action,
                now=timezone.now(),
                user=request.user,
                comment=incoming.validated_data.get("comment", ""),
            )
        except DefinitionInvalid as exc:
            return _definition_error(exc)
        except services.JourneyConflict as exc:
            return _conflict(exc)
        return Response(JourneySerializer(journey).data)


class EnrollmentListView(ListAPIView):
    """GET: the journey's enrollments, newest first (filters `status`, `recipient`). POST {recipient}:
    enroll now (active journeys only)."""

    serializer_class = EnrollmentSerializer
    required = {
        "GET": ("journeys:read", "journeys.view_enrollment"),
        "POST": ("send", "journeys.add_enrollment"),
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Enrollment.objects.none()
        journey = journey_get_or_404(self.kwargs["slug"], user=self.request.user)
        qs = Enrollment.objects.filter(journey=journey).select_related("recipient", "journey", "version")
        if status_filter := self.request.query_params.get("status"):
            qs = qs.filter(status=status_filter)
        if recipient := self.request.query_params.get("recipient"):
            qs = qs.filter(recipient__external_id=recipient)
        return qs

    @extend_schema(request=EnrollmentCreateSerializer, responses={201: EnrollmentSerializer})
    def post(self, request, slug: str):
        journey = journey_get_or_404(slug, user=request.user, perm="journeys.add_enrollment")
        incoming = EnrollmentCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        recipient = Recipient.objects.filter(external_id=incoming.validated_data["recipient"]).first()
        if recipient is None:
            raise NotFound(f"No recipient with external_id {incoming.validated_data['recipient']!r}.")
        try:
            enrollment = services.enrollment_create(journey=journey, recipient=recipient, now=timezone.now())
        except services.JourneyConflict as exc:
            return _conflict(exc)
        enrollment.refresh_from_db()
        return Response(EnrollmentSerializer(enrollment).data, status=status.HTTP_201_CREATED)


REPORT_PARAMETERS = [
    OpenApiParameter("from", str, description="First day (YYYY-MM-DD) or moment (ISO 8601) of the range."),
    OpenApiParameter("to", str, description="Last day (included) or moment (excluded) of the range."),
    OpenApiParameter("half_life", str, description="Time-decay half-life: P7D, PT12H or days (default P7D)."),
    OpenApiParameter(
        "reached", str, description="Statuses that count as a touch (delivered,opened,clicked)."
    ),
    OpenApiParameter("channel", str, description="Only this channel's credit, sequences and steps."),
    OpenApiParameter(
        "model", str, description="Only these models: first,last,linear,time_decay,position_based."
    ),
]


def _report_input_error(exc: reports.ReportInputError) -> Response:
    return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)


class JourneyReportView(APIView):
    """Enrolled, converted and conversion rate of the entrants in the range; touch sequences; the funnel
    by step; credit per channel and step under the five attribution models; lift against the holdout."""

    required = {"GET": ("journeys:read", "journeys.view_report_journey")}

    @extend_schema(parameters=REPORT_PARAMETERS, responses=dict)
    def get(self, request, slug: str):
        journey = journey_get_or_404(slug, user=request.user, perm="journeys.view_report_journey")
        try:
            filters = reports.report_filters_parse(request.query_params, journey=journey)
        except reports.ReportInputError as exc:
            return _report_input_error(exc)
        return Response(reports.journey_report(journey=journey, filters=filters))


class AttributionReportView(APIView):
    """Credit per channel (and journey, step) for first, last, linear, time_decay and position_based:
    a journey's goal conversions (`journey`), else the conversion definitions kept in the admin."""

    required = {"GET": ("journeys:read", "journeys.view_report_journey")}

    @extend_schema(
        parameters=[
            *REPORT_PARAMETERS,
            OpenApiParameter("journey", str, description="A journey's slug: its goal conversions."),
            OpenApiParameter("conversion", str, description="One conversion definition (by name)."),
        ],
        responses=dict,
    )
    def get(self, request):
        if user_channels(request.user) is not None:
            # A channel owner reads the reports of their own journeys only: name one.
            slug = request.query_params.get("journey")
            if not slug or "\x00" in slug:
                raise Denied(
                    "channel_not_owned",
                    "Attribution across every channel is the messaging team's; name a journey you own "
                    "(?journey=<slug>).",
                )
            journey_get_or_404(slug, user=request.user, perm="journeys.view_report_journey")
        try:
            filters = reports.report_filters_parse(request.query_params)
        except reports.ReportInputError as exc:
            return _report_input_error(exc)
        except reports.ReportJourneyNotFound as exc:
            raise NotFound(str(exc)) from exc
        return Response(reports.attribution_report(filters=filters))


urlpatterns = [
    path("", include("journeys.campaign_api")),
    path("journeys/", JourneyListView.as_view(), name="journey-list"),
    path("journeys/<slug:slug>/", JourneyDetailView.as_view(), name="journey-detail"),
    path("journeys/<slug:slug>/enrollments/", EnrollmentListView.as_view(), name="journey-enrollments"),
    path("journeys/<slug:slug>/report/", JourneyReportView.as_view(), name="journey-report"),
    path("journeys/<slug:slug>/<str:action>/", JourneyActionView.as_view(), name="journey-action"),
    path("reports/attribution/", AttributionReportView.as_view(), name="report-attribution"),
]
