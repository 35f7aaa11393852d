"""The conversation in the admin: recipients with a cross-channel timeline; history read-only."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Count, Q, prefetch_related_objects
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from . import selectors
from .consent import (
    consent_burn_by_source_ref,
    consent_burn_weekly,
    consent_conf,
    contact_point_clear,
    preference_changes_record,
)
from .models import (
    BURN_KINDS,
    ChangeKind,
    ChangeSource,
    Channel,
    ContactPoint,
    Event,
    IdempotencyKey,
    Message,
    MessageDecision,
    MessageStatus,
    PermissionBurn,
    Preference,
    PreferenceChange,
    Recipient,
    Source,
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
    fields = ["channel", "address", "opted_in", "deliverable", "soft_bounces", "created_at"]
    readonly_fields = ["deliverable", "soft_bounces", "created_at"]

    @admin.display(description="Deliverable")
    def deliverable(self, obj: ContactPoint) -> str:
        return deliverable_badge(obj)


def deliverable_badge(obj: ContactPoint) -> str:
    if obj.undeliverable_at is None:
        return format_html('<span class="orch-badge" style="background:{}">deliverable</span>', "#059669")
    return format_html(
        '<span class="orch-badge" style="background:#dc2626" title="{}">undeliverable since {}</span> {}',
        obj.undeliverable_reason,
        obj.undeliverable_at.strftime("%Y-%m-%d %H:%M"),
        obj.undeliverable_reason[:80],
    )


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

    def save_formset(self, request, form, formset, change):
        """Preference and opt-in edits made here are recorded with source `admin`."""
        now = timezone.now()
        rows, points = [], []
        for f in formset.forms:
            if not f.has_changed() or not f.cleaned_data or f.cleaned_data.get("DELETE"):
                continue
            obj = f.instance
            if isinstance(obj, Preference) and ("opted_in" in f.changed_data or obj.pk is None):
                rows.append(
                    (f.cleaned_data["channel"], f.cleaned_data["purpose"], f.cleaned_data["opted_in"])
                )
            if isinstance(obj, ContactPoint) and obj.pk is not None and "opted_in" in f.changed_data:
                points.append(obj)
        super().save_formset(request, form, formset, change)
        if rows:
            preference_changes_record(recipient=form.instance, rows=rows, source=ChangeSource.ADMIN, at=now)
        PreferenceChange.objects.bulk_create(
            [
                PreferenceChange(
                    recipient=form.instance,
                    channel=cp.channel,
                    address=cp.address,
                    kind=ChangeKind.RESUBSCRIBE if cp.opted_in else ChangeKind.UNSUBSCRIBE,
                    opted_in=cp.opted_in,
                    source=ChangeSource.ADMIN,
                    detail=f"contact point opted {'in' if cp.opted_in else 'out'} by {request.user}",
                    created_at=now,
                )
                for cp in points
            ]
        )

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


class SourceSystemFilter(admin.SimpleListFilter):
    """The other systems whose sends were recorded here (source = external)."""

    title = "source system (recorded sends)"
    parameter_name = "source_system"

    def lookups(self, request, model_admin):
        systems = (
            Message.objects.filter(source=Source.EXTERNAL)
            .order_by("source_system")
            .values_list("source_system", flat=True)
            .distinct()[:50]
        )
        return [(s, s) for s in systems]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(source=Source.EXTERNAL, source_system=self.value())
        return queryset


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
    list_filter = [
        "channel",
        "status",
        "purpose",
        "source",
        SourceSystemFilter,
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["recipient__external_id", "source_ref", "provider_message_id", "rule", "=external_id"]
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


class DeliverableFilter(admin.SimpleListFilter):
    title = "deliverable"
    parameter_name = "deliverable"

    def lookups(self, request, model_admin):
        return [
            ("no", "Undeliverable (suppressed)"),
            ("yes", "Deliverable"),
            ("soft", "Soft bounces pending"),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "no":
                return queryset.filter(undeliverable_at__isnull=False)
            case "yes":
                return queryset.filter(undeliverable_at__isnull=True)
            case "soft":
                return queryset.filter(undeliverable_at__isnull=True, soft_bounces__gt=0)
        return queryset


@admin.register(ContactPoint)
class ContactPointAdmin(admin.ModelAdmin):
    """Every address, token and number: who opted out, which the providers declared dead, and why."""

    list_display = ["address_or_channel", "recipient", "channel", "opted_in", "deliverable", "soft_bounces"]
    list_filter = [DeliverableFilter, "channel", "opted_in", ("undeliverable_at", admin.DateFieldListFilter)]
    search_fields = ["address", "recipient__external_id", "undeliverable_reason"]
    list_select_related = ["recipient"]
    readonly_fields = ["undeliverable_at", "undeliverable_reason", "soft_bounces", "created_at", "updated_at"]
    fields = ["recipient", "channel", "address", "opted_in", *readonly_fields]
    raw_id_fields = ["recipient"]
    actions = ["clear_suppression"]
    show_full_result_count = False

    @admin.display(description="Address", ordering="address")
    def address_or_channel(self, obj: ContactPoint) -> str:
        return obj.address or f"({obj.get_channel_display()})"

    @admin.display(description="Deliverable", ordering="undeliverable_at")
    def deliverable(self, obj: ContactPoint) -> str:
        return deliverable_badge(obj)

    @admin.action(description="Clear the suppression (deliverable again)")
    def clear_suppression(self, request, queryset):
        now = timezone.now()
        cleared = sum(contact_point_clear(contact_point=cp, by=str(request.user), at=now) for cp in queryset)
        self.message_user(
            request, f"Cleared {cleared} contact point{'s' if cleared != 1 else ''}.", messages.SUCCESS
        )


@admin.register(PreferenceChange)
class PreferenceChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The consent record: every opt-out, opt-in, STOP, bounce and complaint, with its source."""

    list_display = [
        "created_at",
        "recipient",
        "kind",
        "channel",
        "purpose_or_all",
        "source",
        "address",
        "detail",
    ]
    list_filter = ["kind", "source", "channel", "purpose", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["recipient__external_id", "address", "detail"]
    list_select_related = ["recipient"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="Purpose", ordering="purpose")
    def purpose_or_all(self, obj: PreferenceChange) -> str:
        return obj.purpose or "whole channel"


BURN_COLOURS = {
    ChangeKind.UNSUBSCRIBE: "#7c3aed",
    ChangeKind.STOP: "#0d9488",
    ChangeKind.COMPLAINT: "#dc2626",
    ChangeKind.TOKEN_LOST: "#db2777",
}


def permission_burn_context(*, now, weeks: int = 8) -> dict:
    """The monitor's numbers: per week, permission lost by kind next to volume and lint warnings; per
    channel × purpose × source the totals; journeys and campaigns opting out at twice their channel's rate."""
    start = now - timedelta(weeks=weeks)
    data = consent_burn_weekly(since=start, until=now)
    week_keys = sorted({r.week for r in data["burn"]} | {w for w, _ in data["volume"]})
    labels = [w.strftime("%d %b") for w in week_keys]
    kinds = [k for k in ChangeKind if k in BURN_KINDS]
    datasets = []
    for kind in kinds:
        per_week = {w: 0 for w in week_keys}
        for r in data["burn"]:
            if r.kind == kind:
                per_week[r.week] += r.count
        datasets.append(
            {
                "label": kind.label,
                "data": [per_week[w] for w in week_keys],
                "backgroundColor": BURN_COLOURS[kind],
                "stack": "lost",
                "yAxisID": "y",
            }
        )
    sent = {w: 0 for w in week_keys}
    warned = {w: 0 for w in week_keys}
    for (w, _channel), v in data["volume"].items():
        sent[w] += v["sent"]
        warned[w] += v["warned"]
    datasets.append(
        {
            "label": "Messages sent",
            "type": "line",
            "data": [sent[w] for w in week_keys],
            "borderColor": "#2563eb",
            "backgroundColor": "#2563eb",
            "yAxisID": "y1",
        }
    )
    datasets.append(
        {
            "label": "…with lint warnings",
            "type": "line",
            "data": [warned[w] for w in week_keys],
            "borderColor": "#d97706",
            "backgroundColor": "#d97706",
            "borderDash": [4, 4],
            "yAxisID": "y1",
        }
    )
    table: dict[tuple[str, str, str], dict] = {}
    for r in data["burn"]:
        row = table.setdefault(
            (r.channel, r.purpose or "whole channel", r.source), {k.value: 0 for k in kinds}
        )
        row[r.kind] += r.count
    sent_by_channel: dict[str, int] = {}
    warned_by_channel: dict[str, int] = {}
    for (_w, channel), v in data["volume"].items():
        sent_by_channel[channel] = sent_by_channel.get(channel, 0) + v["sent"]
        warned_by_channel[channel] = warned_by_channel.get(channel, 0) + v["warned"]
    rows = [
        {
            "channel": channel,
            "purpose": purpose,
            "source": ChangeSource(source).label,
            "counts": [counts[k.value] for k in kinds],
            "total": sum(counts.values()),
            "sent": sent_by_channel.get(channel, 0),
            "warned": warned_by_channel.get(channel, 0),
        }
        for (channel, purpose, source), counts in sorted(table.items())
    ]
    rates = consent_burn_by_source_ref(since=now - consent_conf("BURN_LOOKBACK"), until=now)
    return {
        "chart": {"labels": labels, "datasets": datasets},
        "kinds": [k.label for k in kinds],
        "rows": rows,
        "rates": sorted(rates, key=lambda r: (-r.flagged, -r.rate)),
        "weeks": weeks,
        "since": start,
        "channels": Channel,
        "lookback_days": consent_conf("BURN_LOOKBACK").days,
    }


@admin.register(PermissionBurn)
class PermissionBurnAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Listed in the app list like a model; renders the monitor instead of a list."""

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("orchestrator.view_preferencechange")

    def changelist_view(self, request, extra_context=None):
        try:
            weeks = max(1, min(int(request.GET.get("weeks", 8)), 52))
        except ValueError:
            weeks = 8
        context = {
            **self.admin_site.each_context(request),
            "title": "Permission-burn monitor",
            "opts": self.model._meta,
            **permission_burn_context(now=timezone.now(), weeks=weeks),
        }
        return TemplateResponse(request, "admin/orchestrator/permission_burn.html", context)
