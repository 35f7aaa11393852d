"""Campaigns (CONTRACT.md v1.1): `GET/POST campaigns/`, `GET/PATCH campaigns/{id}/` (GET adds progress
by status, channel and deciding rule) and `POST campaigns/{id}/{action}/` with propose, approve, reject,
cancel and test `{recipient}`."""

from __future__ import annotations

from collections.abc import Mapping

from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from orchestrator.api.messages import MessageSendResultSerializer, refusal_body
from orchestrator.models import Recipient
from orchestrator.pipeline import SendRefused

from .campaigns import (
    ACTIONS,
    CampaignConflict,
    CampaignInvalid,
    campaign_create,
    campaign_schedule_dict,
    campaign_test_send,
    campaign_transition,
    campaign_update,
)
from .models import Campaign
from .selectors import campaign_progress


class CampaignSerializer(serializers.ModelSerializer):
    segment = serializers.IntegerField(source="segment_id", help_text="The segment's id.")
    segment_name = serializers.CharField(source="segment.name", read_only=True)
    template = serializers.CharField(source="template.key", allow_null=True, default=None)
    schedule = serializers.SerializerMethodField(help_text='{} (now), {"at": ...} or {"local_time", "date"?}')
    status = serializers.CharField(
        read_only=True, help_text="draft, proposed, approved, scheduled, sending, done, cancelled"
    )
    channel = serializers.CharField()
    purpose = serializers.CharField()

    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "segment",
            "segment_name",
            "channel",
            "purpose",
            "template",
            "content",
            "data",
            "priority",
            "expires_at",
            "schedule",
            "throttle_per_minute",
            "status",
            "note",
            "audience",
            "created_by",
            "approved_by",
            "created_at",
            "proposed_at",
            "approved_at",
            "started_at",
            "finished_at",
            "cancelled_at",
        ]

    def get_schedule(self, obj: Campaign) -> dict:
        return campaign_schedule_dict(obj)


class CampaignDetailSerializer(CampaignSerializer):
    progress = serializers.SerializerMethodField(
        help_text="{audience, undecided, decided, refused, cancelled, by_status, by_channel, by_rule}"
    )

    class Meta(CampaignSerializer.Meta):
        fields = [*CampaignSerializer.Meta.fields, "progress"]

    def get_progress(self, obj: Campaign) -> dict:
        return campaign_progress(campaign=obj)


def _object(request) -> Mapping:
    if not isinstance(request.data, Mapping):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    return request.data


def _conflict(exc: CampaignConflict) -> Response:
    return Response({"code": exc.code, "detail": exc.detail}, status=status.HTTP_409_CONFLICT)


def campaign_get_or_404(pk: int) -> Campaign:
    return get_object_or_404(Campaign.objects.select_related("segment", "template"), pk=pk)


class CampaignListView(GenericAPIView):
    """List campaigns (newest first, paginated), or create a draft."""

    serializer_class = CampaignSerializer
    queryset = Campaign.objects.select_related("segment", "template").order_by("-created_at", "-id")

    @extend_schema(operation_id="campaigns_list", responses=CampaignSerializer(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(CampaignSerializer(page, many=True).data)

    @extend_schema(request=CampaignSerializer, responses={201: CampaignDetailSerializer})
    def post(self, request):
        try:
            campaign = campaign_create(data=_object(request), now=timezone.now(), user=request.user)
        except CampaignInvalid as exc:
            raise ValidationError(exc.errors) from exc
        return Response(
            CampaignDetailSerializer(campaign_get_or_404(campaign.pk)).data, status=status.HTTP_201_CREATED
        )


class CampaignDetailView(GenericAPIView):
    serializer_class = CampaignDetailSerializer
    queryset = Campaign.objects.all()

    def get(self, request, pk: int):
        return Response(CampaignDetailSerializer(campaign_get_or_404(pk)).data)

    @extend_schema(request=CampaignSerializer, responses=CampaignDetailSerializer)
    def patch(self, request, pk: int):
        campaign = campaign_get_or_404(pk)
        try:
            campaign_update(campaign=campaign, changes=_object(request), now=timezone.now())
        except CampaignInvalid as exc:
            raise ValidationError(exc.errors) from exc
        except CampaignConflict as exc:
            return _conflict(exc)
        return Response(CampaignDetailSerializer(campaign_get_or_404(pk)).data)


class CampaignTestSerializer(serializers.Serializer):
    recipient = serializers.CharField(max_length=200, help_text="The external id to send the test to.")


class CampaignActionView(GenericAPIView):
    """propose, approve (schedules it), reject (back to draft), cancel (undecided members are not sent;
    409 once done), test {recipient} (one real send through the pipeline, before approval)."""

    serializer_class = CampaignTestSerializer

    @extend_schema(operation_id="campaigns_action", responses=CampaignDetailSerializer)
    def post(self, request, pk: int, action: str):
        if action not in ACTIONS:
            raise NotFound(f"Unknown action {action!r}; expected one of {', '.join(ACTIONS)}.")
        campaign = campaign_get_or_404(pk)
        now = timezone.now()
        if action == "test":
            incoming = CampaignTestSerializer(data=_object(request))
            incoming.is_valid(raise_exception=True)
            recipient = Recipient.objects.filter(external_id=incoming.validated_data["recipient"]).first()
            if recipient is None:
                raise NotFound(f"No recipient with external_id {incoming.validated_data['recipient']!r}.")
            try:
                message = campaign_test_send(
                    campaign=campaign, recipient=recipient, now=now, user=request.user
                )
            except CampaignConflict as exc:
                return _conflict(exc)
            except SendRefused as exc:
                raise ValidationError(refusal_body(exc)) from exc
            return Response(MessageSendResultSerializer(message).data, status=status.HTTP_201_CREATED)
        try:
            campaign_transition(campaign=campaign, action=action, now=now, user=request.user)
        except CampaignConflict as exc:
            return _conflict(exc)
        return Response(CampaignDetailSerializer(campaign_get_or_404(pk)).data)


urlpatterns = [
    path("campaigns/", CampaignListView.as_view(), name="campaign-list"),
    path("campaigns/<int:pk>/", CampaignDetailView.as_view(), name="campaign-detail"),
    path("campaigns/<int:pk>/<str:action>/", CampaignActionView.as_view(), name="campaign-action"),
]
