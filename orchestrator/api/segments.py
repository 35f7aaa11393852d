"""Segments (CONTRACT.md v1.1): `GET/POST segments/`, `GET/PATCH/DELETE segments/{id}/`,
`GET segments/{id}/preview/` → {count, sample}; and `POST segments/preview/` for an unsaved definition."""

from __future__ import annotations

from collections.abc import Mapping

from django.db.models import ProtectedError
from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from .. import selectors, services
from ..models import Segment
from ..segments import SegmentInvalid, segment_definition_validate, segment_describe
from .errors import Conflict


class SegmentSerializer(serializers.ModelSerializer):
    match = serializers.CharField(help_text='"all" (every condition) or "any" (at least one)')
    conditions = serializers.JSONField(
        help_text="[{attribute, op, value} | {field: timezone|locale|reachable|opted_in, op, value} | "
        "{event, min_count?, within?} | {message: received|opened|clicked, journey?, campaign?, within?}]"
    )
    summary = serializers.SerializerMethodField(help_text="The conditions in plain words.")

    class Meta:
        model = Segment
        fields = ["id", "name", "description", "match", "conditions", "summary", "created_at", "updated_at"]

    def get_summary(self, obj: Segment) -> str:
        return segment_describe(match=obj.match, conditions=obj.conditions)


PreviewSerializer = inline_serializer(
    "SegmentPreview",
    {"count": serializers.IntegerField(), "sample": serializers.ListField(child=serializers.CharField())},
)


def _body(request) -> Mapping:
    if not isinstance(request.data, Mapping):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    return request.data


def _invalid(exc: SegmentInvalid) -> ValidationError:
    return ValidationError(exc.errors)


class SegmentListView(GenericAPIView):
    """List segments (paginated, by name), or create one."""

    serializer_class = SegmentSerializer
    queryset = Segment.objects.order_by("name")

    @extend_schema(operation_id="segments_list", responses=SegmentSerializer(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(SegmentSerializer(page, many=True).data)

    @extend_schema(request=SegmentSerializer, responses={201: SegmentSerializer})
    def post(self, request):
        data = _body(request)
        try:
            segment = services.segment_create(
                name=data.get("name"),
                description=data.get("description", ""),
                match=data.get("match", "all"),
                conditions=data.get("conditions", []),
            )
        except SegmentInvalid as exc:
            raise _invalid(exc) from exc
        return Response(SegmentSerializer(segment).data, status=status.HTTP_201_CREATED)


class SegmentDetailView(GenericAPIView):
    serializer_class = SegmentSerializer
    queryset = Segment.objects.all()

    def get(self, request, pk: int):
        return Response(SegmentSerializer(self.get_object()).data)

    @extend_schema(request=SegmentSerializer, responses=SegmentSerializer)
    def patch(self, request, pk: int):
        segment = self.get_object()
        try:
            segment = services.segment_update(segment=segment, changes=_body(request))
        except SegmentInvalid as exc:
            raise _invalid(exc) from exc
        return Response(SegmentSerializer(segment).data)

    def delete(self, request, pk: int):
        segment = self.get_object()
        try:
            segment.delete()
        except ProtectedError as exc:
            raise Conflict(
                f"Segment {segment.name!r} is the audience of a campaign; it cannot be deleted.",
                code="segment_in_use",
            ) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class SegmentPreviewView(GenericAPIView):
    """How many recipients match now, and the first few of them."""

    queryset = Segment.objects.all()

    @extend_schema(responses=PreviewSerializer)
    def get(self, request, pk: int):
        segment = get_object_or_404(Segment, pk=pk)
        preview = selectors.segment_preview(segment=segment, at=timezone.now())
        return Response({"count": preview.count, "sample": preview.sample})


class SegmentDraftSerializer(serializers.Serializer):
    """An unsaved definition: what the editor previews while typing."""

    match = serializers.ChoiceField(choices=["all", "any"], default="all")
    conditions = serializers.ListField(child=serializers.DictField())


class SegmentDraftPreviewView(GenericAPIView):
    """Preview an unsaved definition `{match, conditions}` (what an editor shows while typing)."""

    serializer_class = SegmentDraftSerializer

    @extend_schema(request=SegmentDraftSerializer, responses=PreviewSerializer)
    def post(self, request):
        data = _body(request)
        if "conditions" not in data:
            raise ValidationError(
                {"conditions": ["This field is required (a list of conditions; [] for all)."]}
            )
        match, conditions = data.get("match", "all"), data.get("conditions", [])
        try:
            segment_definition_validate(match=match, conditions=conditions)
        except SegmentInvalid as exc:
            raise _invalid(exc) from exc
        preview = selectors.segment_preview_for(match=match, conditions=conditions, at=timezone.now())
        return Response({"count": preview.count, "sample": preview.sample})


urlpatterns = [
    path("segments/", SegmentListView.as_view(), name="segment-list"),
    path("segments/preview/", SegmentDraftPreviewView.as_view(), name="segment-draft-preview"),
    path("segments/<int:pk>/", SegmentDetailView.as_view(), name="segment-detail"),
    path("segments/<int:pk>/preview/", SegmentPreviewView.as_view(), name="segment-preview"),
]
