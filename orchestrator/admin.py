"""The conversation in the admin: recipients with a cross-channel timeline; history read-only."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db.models import Count, Q, prefetch_related_objects
from django.http import JsonResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from . import erasure as erasure_service
from . import selectors, services
from .audit import audit_entries
from .authority import ALL_CHANNELS_PERM, model_perm_has
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
    ChannelOwnership,
    ContactPoint,
    Event,
    IdempotencyKey,
    Message,
    MessageDecision,
    MessageStatus,
    PermissionBurn,
    Preference,
    PreferenceChange,
    Purpose,
    Recipient,
    Scope,
    Segment,
    ServiceToken,
    Source,
    WorkHeartbeat,
)
from .segments import SegmentInvalid, segment_definition_validate, segment_describe
from .text import duration_text

STATUS_COLOURS = {
    MessageStatus.ACCEPTED: "#2563eb",
    MessageStatus.DEFERRED: "#b45309",
    MessageStatus.SUPPRESSED: "#6b7280",
    MessageStatus.SENT: "#0e7490",
    MessageStatus.DELIVERED: "#047857",
    MessageStatus.OPENED: "#15803d",
    MessageStatus.CLICKED: "#166534",
    MessageStatus.FAILED: "#dc2626",
    MessageStatus.EXPIRED: "#4b5563",
}


def status_badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#374151")
    return format_html('<span class="orch-badge" style="background:{}">{}</span>', colour, status)


def short_time(value) -> str:
    """A time for a list column: "11-27 14:46" (UTC, as everywhere in the admin), the year only when not
    this year. Keeps date columns narrow so a list fits 1400 px."""
    if value is None:
        return "—"
    value = value.astimezone(UTC) if timezone.is_aware(value) else value
    if value.year != timezone.now().year:
        return f"{value:%Y-%m-%d %H:%M}"
    return f"{value:%m-%d %H:%M}"


class PageAdmin(admin.ModelAdmin):
    """A page listed in the app list like a model (on a proxy), rendering its own view: nothing to add,
    change or delete; `page_allowed` says who sees it (staff by default)."""

    def page_allowed(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return self.page_allowed(request)

    def has_module_permission(self, request):
        return self.page_allowed(request)


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
        return format_html('<span class="orch-badge" style="background:{}">deliverable</span>', "#047857")
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


# The erase action's confirmation (inline: the admin's own templates belong to the screens' owners).
ERASE_CONFIRM = engines["django"].from_string(
    """{% extends "admin/base_site.html" %}{% block content %}
<p>Erase the personal data of these people? Their contact points, preferences, attributes, event properties
and message content are removed; their messages, decisions and enrollments stay, anonymised. This cannot be
undone.</p>
<ul>{% for p in people %}<li>{{ p.external_id }}</li>
{% empty %}<li>Nobody (already erased).</li>{% endfor %}</ul>
<form method="post">{% csrf_token %}
{% for p in people %}<input type="hidden" name="_selected_action" value="{{ p.pk }}">{% endfor %}
<input type="hidden" name="action" value="erase_selected"><input type="hidden" name="confirm" value="yes">
<input type="submit" value="Yes, erase them"> <a href="">No, go back</a></form>
{% endblock %}"""
)


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
    actions = ["erase_selected"]

    def has_erase_permission(self, request) -> bool:
        return request.user.has_perm("orchestrator.erase_recipient")

    @admin.action(
        description="Erase the selected people (right to erasure; not reversible)", permissions=["erase"]
    )
    def erase_selected(self, request, queryset):
        """Confirm first (a page listing who), then `recipient_erase` each: audited as the admin user."""
        people = list(queryset.filter(erased_at__isnull=True))
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(
                request,
                ERASE_CONFIRM,
                {**self.admin_site.each_context(request), "title": "Erase these people?", "people": people},
            )
        now = timezone.now()
        for recipient in people:
            erasure_service.recipient_erase(recipient=recipient, actor=request.user, at=now, via="admin")
        self.message_user(
            request,
            f"Erased {len(people)} {'person' if len(people) == 1 else 'people'}: contact points, "
            "preferences, attributes, event properties and message content removed; counts kept anonymised.",
            messages.SUCCESS,
        )
        return None

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
                # What the governor cleared (what caps count), as on the recipient's page.
                _messages_24h=Count("messages", filter=Q(messages__accepted_at__gte=since), distinct=True)
            )
            .prefetch_related("contact_points")
        )

    def get_search_results(self, request, queryset, search_term):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), False

    @admin.display(description="Channels")
    def channels(self, obj: Recipient) -> str:
        return ", ".join(sorted({cp.channel for cp in obj.contact_points.all() if cp.opted_in})) or "—"

    @admin.display(description="Cleared 24 h", ordering="_messages_24h")
    def messages_24h(self, obj: Recipient) -> int:
        return obj._messages_24h

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        recipient = self.get_object(request, object_id)
        if recipient is not None:
            extra_context.update(
                recipient_conversation(recipient=recipient, query=request.GET, now=timezone.now())
            )
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


TIMELINE_LIMIT = 200


def _day(value: str, field: str, errors: dict[str, str]):
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        errors[field] = f"{field}: expected a date like 2026-03-01, got “{value[:20]}”."
        return None
    return datetime.combine(day, time.min, tzinfo=UTC)


def recipient_conversation(*, recipient: Recipient, query, now: datetime) -> dict:
    """The recipient page's conversation: the timeline (messages, events, journey moments) filtered by
    channel, status and date, and the last 24 h counted as the governor counts them."""
    errors: dict[str, str] = {}
    channel = query.get("channel", "")
    if channel and channel not in Channel.values:
        errors["channel"] = f"channel: expected one of {', '.join(Channel.values)}."
        channel = ""
    status = query.get("status", "")
    if status and status not in MessageStatus.values:
        errors["status"] = f"status: expected one of {', '.join(MessageStatus.values)}."
        status = ""
    since = _day(query.get("since", ""), "since", errors)
    until = _day(query.get("until", ""), "until", errors)
    if until is not None:
        until += timedelta(days=1)  # the "until" day is included
    entries = selectors.recipient_timeline(
        recipient=recipient,
        since=since,
        until=until,
        channel=channel,
        status=status,
        limit=TIMELINE_LIMIT,
        properties=False,
    )
    if not channel and not status:
        extras = selectors.recipient_timeline_extras(
            recipient=recipient, since=since, until=until, limit=TIMELINE_LIMIT
        )
        entries = sorted([*entries, *extras], key=lambda e: e.at, reverse=True)[:TIMELINE_LIMIT]
    prefetch_related_objects([e.message for e in entries if e.message is not None], "decisions")

    # The last 24 h as the governor sees them: what it cleared (what caps count), apart from what it holds
    # (deferred) and what it stopped (suppressed, expired).
    day_ago = now - timedelta(hours=24)
    recent = Message.objects.filter(recipient=recipient).filter(
        Q(accepted_at__gte=day_ago) | Q(created_at__gte=day_ago)
    )
    cleared = Q(accepted_at__gte=day_ago)
    counts = recent.aggregate(
        cleared=Count("id", filter=cleared),
        held=Count("id", filter=Q(status=MessageStatus.DEFERRED, created_at__gte=day_ago)),
        suppressed=Count(
            "id",
            filter=Q(status__in=[MessageStatus.SUPPRESSED, MessageStatus.EXPIRED], created_at__gte=day_ago),
        ),
    )
    by_channel = recent.filter(cleared).values_list("channel").annotate(n=Count("id")).order_by("channel")
    return {
        "timeline": entries,
        "timeline_tz": recipient.tzinfo,
        "timeline_filters": {
            "channel": channel,
            "status": status,
            "since": query.get("since", "") if "since" not in errors else "",
            "until": query.get("until", "") if "until" not in errors else "",
        },
        "timeline_filtered": bool(channel or status or since or until),
        "timeline_errors": list(errors.values()),
        "timeline_limit": TIMELINE_LIMIT,
        "channel_choices": Channel.choices,
        "status_choices": MessageStatus.choices,
        "today_count": counts["cleared"],
        "today_held": counts["held"],
        "today_suppressed": counts["suppressed"],
        "today_by_channel": list(by_channel),
        "status_colours": STATUS_COLOURS,
    }


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
        "created",
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

    @admin.display(description="Created (UTC)", ordering="created_at")
    def created(self, obj: Message) -> str:
        return short_time(obj.created_at)


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "recipient", "name", "received_at"]
    list_filter = ["name", ("occurred_at", admin.DateFieldListFilter)]
    search_fields = ["recipient__external_id", "name"]
    date_hierarchy = "occurred_at"
    list_select_related = ["recipient"]
    show_full_result_count = False


@admin.register(WorkHeartbeat)
class WorkHeartbeatAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """When the due-work pass last ran and what failed in it (the health banner links here)."""

    list_display = ["name", "last_run_at", "last_ok_at", "errors_text"]
    fields = ["name", "last_run_at", "last_ok_at", "errors_text"]
    readonly_fields = fields

    @admin.display(description="Failures in the last pass")
    def errors_text(self, obj: WorkHeartbeat) -> str:
        return "; ".join(f"{path}: {error}" for path, error in sorted(obj.errors.items())) or "none"


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["scope", "key", "response_status", "created_at"]
    search_fields = ["key"]
    list_filter = ["scope"]


# ---- authority: service tokens, people and their roles, channel bindings -----------------------------


class ServiceTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="What the service may call; its account's role bounds it further.",
    )
    user = forms.ModelChoiceField(
        queryset=get_user_model().objects.order_by("username"),
        required=False,
        label="Acts as",
        help_text="Blank: a service account svc-<name> in the Service role is created for it.",
    )

    class Meta:
        model = ServiceToken
        fields = ["name", "user", "scopes"]


@admin.register(ServiceToken)
class ServiceTokenAdmin(SimpleHistoryAdmin):
    """Tokens are created here and shown once; only a hash is kept. Revoking stops them at once."""

    form = ServiceTokenForm
    list_display = [
        "name",
        "prefix_text",
        "user",
        "scopes_text",
        "state",
        "last_used_at",
        "created_at",
        "created_by",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["prefix_text", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]
    history_list_display = ["history_source"]

    def get_readonly_fields(self, request, obj=None):
        # A token's identity is fixed once issued: change its scopes, or revoke it and issue another.
        return [*self.readonly_fields, "name", "user"] if obj else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the audit keeps who used what

    @admin.display(description="Key")
    def prefix_text(self, obj: ServiceToken) -> str:
        return f"{obj.prefix}…" if obj.prefix else "—"

    @admin.display(description="Scopes")
    def scopes_text(self, obj: ServiceToken) -> str:
        return ", ".join(obj.scopes) or "none"

    @admin.display(description="State")
    def state(self, obj: ServiceToken) -> str:
        if obj.revoked_at:
            return format_html(
                '<strong style="color:#6b7280">revoked {}</strong>', f"{obj.revoked_at:%Y-%m-%d}"
            )
        return format_html('<strong style="color:#15803d">{}</strong>', "active")

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = services.service_token_create(
            name=obj.name,
            scopes=list(form.cleaned_data["scopes"]),
            user=form.cleaned_data["user"],
            by=request.user,
        )
        obj.pk, obj.user, obj.prefix, obj._state.adding = token.pk, token.user, token.prefix, False
        request._service_token_raw = raw

    def response_add(self, request, obj, post_url_continue=None):
        raw = getattr(request, "_service_token_raw", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        return TemplateResponse(
            request,
            "admin/orchestrator/servicetoken/created.html",
            {
                **self.admin_site.each_context(request),
                "title": "Token created",
                "token": obj,
                "raw": raw,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        n = services.service_tokens_revoke(tokens=list(queryset))
        self.message_user(request, f"{n} token{'s' if n != 1 else ''} revoked.")


class ChannelOwnershipForm(forms.ModelForm):
    channels = forms.MultipleChoiceField(
        choices=Channel.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="A channel owner drafts and proposes journeys whose sends use only these channels.",
    )

    class Meta:
        model = ChannelOwnership
        fields = ["channels"]


class ChannelOwnershipInline(admin.StackedInline):
    model = ChannelOwnership
    form = ChannelOwnershipForm
    can_delete = True
    extra = 0
    max_num = 1
    verbose_name = "owned channels"
    verbose_name_plural = "owned channels (Channel owner role)"


User = get_user_model()
for _model in (User, Group):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


@admin.register(User)
class OrchestratorUserAdmin(SimpleHistoryAdmin, UserAdmin):
    """People: their roles (groups) and, for channel owners, the channels they own; changes are audited."""

    inlines = [ChannelOwnershipInline]
    list_display = ["username", "email", "roles", "owned_channels", "is_staff", "is_superuser", "last_login"]
    list_filter = ["groups", "is_staff", "is_superuser", "is_active"]
    history_list_display = ["history_source"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups").select_related("channel_ownership")

    @admin.display(description="Roles")
    def roles(self, obj) -> str:
        return ", ".join(g.name for g in obj.groups.all()) or "—"

    @admin.display(description="Owns")
    def owned_channels(self, obj) -> str:
        ownership = getattr(obj, "channel_ownership", None)
        return ", ".join(ownership.channels) if ownership else "—"


@admin.register(Group)
class RoleAdmin(SimpleHistoryAdmin, GroupAdmin):
    """Roles are groups: the permissions listed here are what the role may do (object rules add the
    channel binding and separation of duties)."""

    history_list_display = ["history_source"]


# ---- the audit: every governed change in one list -------------------------------------------------


class AuditLog(ChannelOwnership):
    """Not data: the admin's audit page (every historical record of every audited model) hangs off it."""

    class Meta:
        proxy = True
        verbose_name = "audit log"
        verbose_name_plural = "audit log"


@admin.register(AuditLog)
class AuditLogAdmin(PageAdmin):
    """The audit log is the messaging team's (and superusers')."""

    def page_allowed(self, request) -> bool:
        return request.user.is_active and model_perm_has(request.user, ALL_CHANNELS_PERM)

    def changelist_view(self, request, extra_context=None):
        filters = {k: request.GET.get(k, "") for k in ("model", "user", "source", "q")}
        entries, models_ = audit_entries(
            model=filters["model"], user=filters["user"], source=filters["source"], limit=200
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Audit log",
            "opts": self.model._meta,
            "entries": entries,
            "models": models_,
            "filters": filters,
            "sources": ["admin", "api", "command", "system"],
        }
        return TemplateResponse(request, "admin/orchestrator/audit_log.html", context)


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
    ChangeKind.STOP: "#0f766e",
    ChangeKind.COMPLAINT: "#dc2626",
    ChangeKind.TOKEN_LOST: "#be185d",
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
            "borderColor": "#b45309",
            "backgroundColor": "#b45309",
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
