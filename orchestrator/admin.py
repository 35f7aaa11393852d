"""The conversation in the admin: recipients with a cross-channel timeline; history read-only."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Q, prefetch_related_objects
from django.utils import timezone
from django.utils.html import format_html

from . import selectors
from .models import (
    ContactPoint,
    Event,
    IdempotencyKey,
    Message,
    MessageDecision,
    MessageStatus,
    Preference,
    Recipient,
)
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
