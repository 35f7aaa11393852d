"""The conversation in the admin: recipients with a cross-channel timeline; history read-only."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.db.models import Count, Q, prefetch_related_objects
from django.http import JsonResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from . import selectors, services
from .models import (
    Channel,
    ContactPoint,
    Event,
    IdempotencyKey,
    Message,
    MessageDecision,
    MessageStatus,
    Preference,
    Purpose,
    Recipient,
    Segment,
)
from .segments import SegmentInvalid, segment_definition_validate, segment_describe
from .text import duration_text

STATUS_COLOURS = {
    MessageStatus.ACCEPTED: "#2563eb",
    MessageStatus.DEFERRED: "#d97706",
    MessageStatus.SUPPRESSED: "#6b7280",
    MessageStatus.SENT: "#0891b2",
    MessageStatus.DELIVERED: "#059669",
    MessageStatus.OPENED: "#16a34a",
    MessageStatus.CLICKED: "#15803d",
    MessageStatus.FAILED: "#dc2626",
    MessageStatus.EXPIRED: "#9ca3af",
}


def status_badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#374151")
    return format_html('<span class="orch-badge" style="background:{}">{}</span>', colour, status)


class ReadOnlyAdminMixin:
    """History is written by services only: viewable, never editable in the admin."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ContactPointInline(admin.TabularInline):
    model = ContactPoint
    extra = 0
    fields = ["channel", "address", "opted_in", "created_at"]
    readonly_fields = ["created_at"]


class PreferenceInline(admin.TabularInline):
    model = Preference
    extra = 0
    fields = ["channel", "purpose", "opted_in", "updated_at"]
    readonly_fields = ["updated_at"]


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "timezone",
        "locale",
        "channels",
        "messages_24h",
        "last_seen_at",
        "created_at",
    ]
    search_fields = ["external_id", "contact_points__address"]
    list_filter = ["timezone", "contact_points__channel"]
    readonly_fields = ["created_at", "updated_at", "last_seen_at"]
    fieldsets = [
        (None, {"fields": ["external_id", "timezone", "locale", "attributes"]}),
        ("Activity", {"fields": ["last_seen_at", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    inlines = [ContactPointInline, PreferenceInline]
    change_form_template = "admin/orchestrator/recipient/change_form.html"

    def get_queryset(self, request):
        since = timezone.now() - timezone.timedelta(hours=24)
        return (
            super()
            .get_queryset(request)
            .annotate(
                _messages_24h=Count("messages", filter=Q(messages__created_at__gte=since), distinct=True)
            )
            .prefetch_related("contact_points")
        )

    def get_search_results(self, request, queryset, search_term):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), False

    @admin.display(description="Channels")
    def channels(self, obj: Recipient) -> str:
        return ", ".join(sorted({cp.channel for cp in obj.contact_points.all() if cp.opted_in})) or "—"

    @admin.display(description="Messages 24 h", ordering="_messages_24h")
    def messages_24h(self, obj: Recipient) -> int:
        return obj._messages_24h

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        recipient = self.get_object(request, object_id)
        if recipient is not None:
            entries = selectors.recipient_timeline(recipient=recipient, limit=200)
            prefetch_related_objects([e.message for e in entries if e.message is not None], "decisions")
            day_ago = timezone.now() - timezone.timedelta(hours=24)
            today = [e.message for e in entries if e.message is not None and e.at >= day_ago]
            extra_context.update(
                timeline=entries,
                timeline_tz=recipient.tzinfo,
                today_count=len(today),
                today_by_channel=sorted(
                    {m.channel: sum(1 for x in today if x.channel == m.channel) for m in today}.items()
                ),
                status_colours=STATUS_COLOURS,
            )
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


class MessageDecisionInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Every decision of the governor on this message, oldest first, with the numbers behind it."""

    model = MessageDecision
    extra = 0
    can_delete = False
    fields = ["at", "outcome_tag", "rule", "reason", "used_of_limit", "next_slot"]
    readonly_fields = fields
    verbose_name = "decision"
    verbose_name_plural = "decisions (the first, then every re-drive)"

    @admin.display(description="Outcome")
    def outcome_tag(self, obj: MessageDecision) -> str:
        return status_badge(obj.outcome)

    @admin.display(description="Used / limit")
    def used_of_limit(self, obj: MessageDecision) -> str:
        if obj.limit is None:
            return "—"
        return (
            f"{obj.used} of {obj.limit} in {duration_text(obj.window)}"
            if obj.window
            else f"{obj.used} of {obj.limit}"
        )


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "created_at",
        "recipient",
        "channel",
        "purpose",
        "status_tag",
        "rule",
        "source",
        "summary",
    ]
    list_filter = ["channel", "status", "purpose", "source", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["recipient__external_id", "source_ref", "provider_message_id", "rule"]
    date_hierarchy = "created_at"
    list_select_related = ["recipient"]
    show_full_result_count = False
    inlines = [MessageDecisionInline]

    @admin.display(description="Status", ordering="status")
    def status_tag(self, obj: Message) -> str:
        return status_badge(obj.status)


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "recipient", "name", "received_at"]
    list_filter = ["name", ("occurred_at", admin.DateFieldListFilter)]
    search_fields = ["recipient__external_id", "name"]
    date_hierarchy = "occurred_at"
    list_select_related = ["recipient"]
    show_full_result_count = False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["scope", "key", "response_status", "created_at"]
    search_fields = ["key"]
    list_filter = ["scope"]


# --- segments --------------------------------------------------------------------------------------


class SegmentForm(forms.ModelForm):
    """The builder (static/orchestrator/segment_builder.js) writes the conditions as JSON into
    `conditions`; validation is the service's, with the path of every error (conditions[1].op)."""

    conditions = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 90, "class": "orch-json"}),
        help_text="The conditions as JSON (CONTRACT.md); the builder above writes it for you.",
    )

    class Meta:
        model = Segment
        fields = ["name", "description", "match", "conditions"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 90})}

    def clean_conditions(self):
        return self.cleaned_data.get("conditions") or []

    def clean(self):
        data = super().clean()
        try:
            segment_definition_validate(match=data.get("match"), conditions=data.get("conditions") or [])
        except SegmentInvalid as exc:
            raise forms.ValidationError(
                [f"{field}: {' '.join(messages)}" for field, messages in exc.errors.items()]
            ) from exc
        return data


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = ["name", "match", "summary", "updated_at"]
    list_filter = ["match"]
    search_fields = ["name", "description"]
    change_form_template = "admin/orchestrator/segment/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "description", "match"]}),
        ("Conditions as JSON", {"fields": ["conditions"], "classes": ["collapse"]}),
    ]

    @admin.display(description="Who")
    def summary(self, obj: Segment) -> str:
        text = segment_describe(match=obj.match, conditions=obj.conditions)
        return text if len(text) <= 140 else text[:139] + "…"

    def save_model(self, request, obj, form, change):
        fields = {k: form.cleaned_data[k] for k in ("name", "description", "match", "conditions")}
        try:
            if change:
                saved = services.segment_update(segment=Segment.objects.get(pk=obj.pk), changes=fields)
            else:
                saved = services.segment_create(**fields)
        except SegmentInvalid as exc:  # a concurrent rename took the name: shown as an error
            raise forms.ValidationError(str(exc)) from exc
        obj.pk, obj.created_at, obj.updated_at = saved.pk, saved.created_at, saved.updated_at

    def get_urls(self):
        return [
            path(
                "preview/",
                self.admin_site.admin_view(self.preview_view),
                name="orchestrator_segment_preview",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request):
        """The live count and sample of the definition being edited (POST {match, conditions})."""
        if request.method != "POST" or not self.has_view_or_change_permission(request):
            return JsonResponse({"errors": {"": ["POST the definition."]}}, status=405)
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return JsonResponse({"errors": {"": ["Expected JSON."]}}, status=400)
        if not isinstance(body, dict):
            return JsonResponse({"errors": {"": ["Expected a JSON object."]}}, status=400)
        match, conditions = body.get("match", "all"), body.get("conditions", [])
        try:
            segment_definition_validate(match=match, conditions=conditions)
        except SegmentInvalid as exc:
            return JsonResponse({"errors": exc.errors}, status=400)
        preview = selectors.segment_preview_for(match=match, conditions=conditions, at=timezone.now())
        return JsonResponse(
            {
                "count": preview.count,
                "sample": preview.sample,
                "summary": segment_describe(match=match, conditions=conditions),
            }
        )

    def render_change_form(self, request, context, *args, **kwargs):
        context.update(
            builder_options=json.dumps(
                {
                    "channels": Channel.values,
                    "purposes": Purpose.values,
                }
            ),
        )
        return super().render_change_form(request, context, *args, **kwargs)
