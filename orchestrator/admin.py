"""The conversation in the admin: recipients with a cross-channel timeline; history read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db.models import Count, Q, prefetch_related_objects
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from . import selectors, services
from .audit import audit_entries
from .authority import ALL_CHANNELS_PERM, model_perm_has
from .models import (
    Channel,
    ChannelOwnership,
    ContactPoint,
    Event,
    IdempotencyKey,
    Message,
    MessageDecision,
    MessageStatus,
    Preference,
    Recipient,
    Scope,
    ServiceToken,
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
        return format_html('<strong style="color:#16a34a">{}</strong>', "active")

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
