"""Templates (CONTRACT.md v1.1): `GET/POST templates/`, `GET/PATCH templates/{key}/`,
`POST templates/{key}/preview/` → the rendered content for a recipient's locale, with the lint."""

from __future__ import annotations

from collections.abc import Mapping

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from orchestrator.models import Recipient

from .models import TEMPLATE_FIELDS, MessageTemplate
from .services import template_create, template_update
from .templating import TemplateInvalid, template_preview


class TemplateSerializer(serializers.ModelSerializer):
    channel = serializers.CharField(help_text="email, push, sms, in_app or auto")
    purpose = serializers.CharField(required=False, allow_blank=True)
    locales = serializers.SerializerMethodField(
        help_text='{"en": {subject?, title?, body, action_url?}, ...}'
    )

    class Meta:
        model = MessageTemplate
        fields = [
            "key",
            "name",
            "channel",
            "purpose",
            "default_locale",
            "locales",
            "revision",
            "created_at",
            "updated_at",
        ]

    def get_locales(self, obj: MessageTemplate) -> dict[str, dict[str, str]]:
        return {
            v.locale: {name: getattr(v, name) for name in TEMPLATE_FIELDS if getattr(v, name)}
            for v in obj.variants.all()
        }


def _with_previews(template: MessageTemplate) -> dict:
    body = TemplateSerializer(template).data
    body["previews"] = {
        p.locale: {"content": p.content, "lint": p.lint} for p in getattr(template, "previews", [])
    }
    return body


def _object(request) -> Mapping:
    if not isinstance(request.data, Mapping):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    return request.data


def _invalid(exc: TemplateInvalid) -> Response:
    return Response(exc.as_response(), status=status.HTTP_400_BAD_REQUEST)


def template_get_or_404(key: str) -> MessageTemplate:
    return get_object_or_404(MessageTemplate.objects.prefetch_related("variants"), key=key)


class TemplateListView(GenericAPIView):
    """List templates (paginated, by key), or create one: every variant is parsed, checked for unknown
    variables and filters, rendered with sample values and linted before anything is saved."""

    serializer_class = TemplateSerializer
    queryset = MessageTemplate.objects.prefetch_related("variants").order_by("key")

    @extend_schema(operation_id="templates_list", responses=TemplateSerializer(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(TemplateSerializer(page, many=True).data)

    @extend_schema(request=TemplateSerializer, responses={201: TemplateSerializer})
    def post(self, request):
        try:
            template = template_create(data=dict(_object(request)))
        except TemplateInvalid as exc:
            return _invalid(exc)
        return Response(_with_previews(template), status=status.HTTP_201_CREATED)


class TemplateDetailView(GenericAPIView):
    serializer_class = TemplateSerializer
    queryset = MessageTemplate.objects.all()

    def get(self, request, key: str):
        return Response(TemplateSerializer(template_get_or_404(key)).data)

    @extend_schema(request=TemplateSerializer, responses=TemplateSerializer)
    def patch(self, request, key: str):
        template = template_get_or_404(key)
        try:
            template = template_update(template=template, changes=dict(_object(request)))
        except TemplateInvalid as exc:
            return _invalid(exc)
        return Response(_with_previews(template))


class TemplatePreviewInputSerializer(serializers.Serializer):
    recipient = serializers.CharField(max_length=200, help_text="The recipient's external_id.")
    data = serializers.DictField(required=False, default=dict)
    event = serializers.DictField(
        required=False, default=dict, help_text="{name, properties} to render with."
    )
    channel = serializers.CharField(
        required=False, help_text="Lint for this channel (default: the template's)."
    )
    purpose = serializers.CharField(required=False)


class TemplatePreviewView(GenericAPIView):
    """Render the template for one recipient as it would be sent: their locale's variant (pt-BR → pt →
    default), their attributes, the given data; with the channel lint of the rendered content."""

    serializer_class = TemplatePreviewInputSerializer

    def post(self, request, key: str):
        template = template_get_or_404(key)
        incoming = TemplatePreviewInputSerializer(data=_object(request))
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        recipient = Recipient.objects.filter(external_id=data["recipient"]).first()
        if recipient is None:
            raise NotFound(f"No recipient with external_id {data['recipient']!r}.")
        preview = template_preview(
            template=template,
            recipient=recipient,
            data=data["data"],
            event=data["event"],
            channel=data.get("channel"),
            purpose=data.get("purpose"),
        )
        r = preview.rendered
        return Response(
            {
                "template": template.key,
                "recipient": recipient.external_id,
                "recipient_locale": recipient.locale,
                "locale": r.locale,
                "ok": r.ok,
                "content": r.content if r.ok else None,
                "error": r.problem.as_dict() | {"detail": str(r.problem)} if r.problem else None,
                "lint": preview.lint,
                "sandbox": r.sandbox,
            }
        )


urlpatterns = [
    path("templates/", TemplateListView.as_view(), name="template-list"),
    path("templates/<str:key>/", TemplateDetailView.as_view(), name="template-detail"),
    path("templates/<str:key>/preview/", TemplatePreviewView.as_view(), name="template-preview"),
]
