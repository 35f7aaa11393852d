"""Channels in the admin: editable personalities with a lint preview, read-only delivery attempts, and
the dead-letter list with a "retry now" action."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from orchestrator.admin import ReadOnlyAdminMixin, status_badge
from orchestrator.authority import allowed, explain
from orchestrator.forms import ISODurationFormField, TagsField
from orchestrator.limits import duration_iso
from orchestrator.models import Channel, Purpose, Recipient

from .delivery import message_delivery_retry
from .lint import Severity, message_lint
from .models import (
    TEMPLATE_FIELDS,
    AttemptOutcome,
    ChannelPolicy,
    CircuitState,
    DeadLetter,
    DeliveryAttempt,
    MessageTemplate,
    ProviderCircuit,
    TemplateVariant,
)
from .providers import circuit_close, providers_for_channel
from .services import channel_policies_restore
from .templating import TemplateInvalid, template_definition_validate, template_preview

RETRY_PERM = "channels_app.change_deadletter"
OUTCOME_COLOURS = {
    AttemptOutcome.IN_PROGRESS: "#2563eb",
    AttemptOutcome.SUCCESS: "#047857",
    AttemptOutcome.TRANSIENT: "#b45309",
    AttemptOutcome.PERMANENT: "#dc2626",
}
SEVERITY_COLOURS = {Severity.BLOCK: "#dc2626", Severity.WARN: "#b45309"}


def _badge(text: str, colour: str) -> str:
    return format_html('<span class="orch-badge" style="background:{}">{}</span>', colour, text)


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LintTryForm(forms.Form):
    """Content as an author would write it, linted against the saved channel policy."""

    channel = forms.ChoiceField(choices=Channel.choices)
    purpose = forms.ChoiceField(choices=Purpose.choices)
    subject = forms.CharField(required=False)
    title = forms.CharField(required=False)
    body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 70}))
    action_url = forms.CharField(required=False)
    more_actions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 70}),
        help_text="Extra buttons/links, one per line (to see how the channel treats several actions).",
    )

    def content(self) -> dict:
        data = self.cleaned_data
        content = {k: data[k] for k in ("subject", "title", "body", "action_url") if data.get(k)}
        extra = [line.strip() for line in data.get("more_actions", "").splitlines() if line.strip()]
        if extra:
            content["actions"] = extra
        return content


class ChannelPolicyForm(forms.ModelForm):
    """Proper widgets instead of JSON text boxes: purposes as checkboxes, URL prefixes and marketing terms as
    tags, the shelf life as an ISO 8601 duration."""

    allowed_purposes = forms.MultipleChoiceField(
        choices=Purpose.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Purposes this channel may carry; none ticked: every purpose.",
    )
    product_url_prefixes = TagsField(
        label="Product URL prefixes",
        help_text='Links that count as "inside the product", e.g. app:// or /. '
        "Type one, then a comma or Enter.",
    )
    marketing_terms = TagsField(
        help_text="Words that make a transactional or alert message look like marketing (a warning). "
        "Type one, then a comma or Enter.",
    )
    default_ttl = ISODurationFormField(
        required=False,
        label="Shelf life",
        help_text="expires_at given to messages whose caller set none: PT4H four hours, P1D a day, P7D a "
        "week; blank: they never expire.",
    )

    class Meta:
        model = ChannelPolicy
        fields = [
            "channel",
            "job",
            "allowed_purposes",
            "default_ttl",
            "subject_required",
            "title_required",
            "context_required",
            "product_url_prefixes",
            "title_max_chars",
            "body_max_chars",
            "body_max_words",
            "segment_chars",
            "max_actions",
            "marketing_terms",
        ]
        widgets = {"job": forms.TextInput(attrs={"class": "vLargeTextField"})}


@admin.register(ChannelPolicy)
class ChannelPolicyAdmin(SimpleHistoryAdmin):
    history_list_display = ["history_source"]
    form = ChannelPolicyForm
    change_form_template = "admin/channels_app/channelpolicy/change_form.html"

    @admin.display(description="Shelf life", ordering="default_ttl")
    def shelf_life(self, obj: ChannelPolicy) -> str:
        return duration_iso(obj.default_ttl) if obj.default_ttl else "—"

    list_display = ["channel", "job", "purposes", "limits", "shelf_life", "updated_at"]
    readonly_fields = ["updated_at", "try_it"]
    actions = ["restore_defaults"]
    change_list_template = "admin/channels_app/channelpolicy/change_list.html"
    fieldsets = [
        (None, {"fields": ["channel", "job", "allowed_purposes", "default_ttl"]}),
        (
            "What the lint enforces",
            {
                "fields": [
                    "subject_required",
                    "title_required",
                    "context_required",
                    "product_url_prefixes",
                    ("title_max_chars", "body_max_chars", "body_max_words"),
                    ("segment_chars", "max_actions"),
                    "marketing_terms",
                ]
            },
        ),
        ("Try it", {"fields": ["try_it", "updated_at"]}),
    ]

    def has_add_permission(self, request):
        # One policy per channel: nothing to add once every channel has its own.
        return super().has_add_permission(request) and ChannelPolicy.objects.count() < len(Channel.values)

    def has_change_permission(self, request, obj=None):
        # The role's permission, and (object rule) the policy's channel.
        return allowed(request.user, "channels_app.change_channelpolicy", obj)

    def has_delete_permission(self, request, obj=None):
        return False  # every channel keeps a job; "Restore the shipped defaults" undoes edits

    def get_readonly_fields(self, request, obj=None):
        # The channel is the row's identity: fixed once created.
        return [*self.readonly_fields, "channel"] if obj else self.readonly_fields

    @admin.display(description="Purposes")
    def purposes(self, obj: ChannelPolicy) -> str:
        return ", ".join(obj.allowed_purposes) or "all"

    @admin.display(description="Limits")
    def limits(self, obj: ChannelPolicy) -> str:
        parts = []
        if obj.subject_required:
            parts.append("subject required")
        if obj.context_required:
            parts.append("product context required")
        if obj.title_max_chars:
            parts.append(f"title ≤ {obj.title_max_chars} chars")
        if obj.body_max_chars:
            parts.append(f"body ≤ {obj.body_max_chars} chars")
        if obj.body_max_words:
            parts.append(f"≤ {obj.body_max_words} words")
        if obj.max_actions is not None:
            parts.append(f"≤ {obj.max_actions} action{'s' if obj.max_actions != 1 else ''}")
        return "; ".join(parts) or "—"

    @admin.display(description="Lint preview")
    def try_it(self, obj: ChannelPolicy) -> str:
        if not obj or not obj.pk:
            return "Save the policy first."
        url = reverse("admin:channels_app_channelpolicy_lint")
        return format_html(
            '<a class="button" href="{}?channel={}">Try content against the {} policy</a>',
            url,
            obj.channel,
            obj.get_channel_display(),
        )

    @admin.action(description="Restore the shipped defaults")
    def restore_defaults(self, request, queryset):
        n = channel_policies_restore(channels=list(queryset.values_list("channel", flat=True)))
        self.message_user(request, f"Restored the defaults on {n} channel polic{'y' if n == 1 else 'ies'}.")

    def get_urls(self):
        return [
            path("lint/", self.admin_site.admin_view(self.lint_view), name="channels_app_channelpolicy_lint"),
            *super().get_urls(),
        ]

    def lint_view(self, request):
        """Paste content, see what each channel's job says about it (block / warn, with the reason)."""
        bound = "body" in request.GET or "title" in request.GET or "subject" in request.GET
        form = LintTryForm(request.GET if bound else None, initial={"channel": request.GET.get("channel")})
        violations = None
        if bound and form.is_valid():
            violations = message_lint(
                channel=form.cleaned_data["channel"],
                purpose=form.cleaned_data["purpose"],
                content=form.content(),
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Try content against a channel's job",
            "opts": self.model._meta,
            "form": form,
            "violations": [{"v": v, "colour": SEVERITY_COLOURS[v.severity]} for v in (violations or [])],
            "linted": violations is not None,
            "blocked": any(v.severity == Severity.BLOCK for v in violations or []),
            "policies": ChannelPolicy.objects.all(),
        }
        return TemplateResponse(request, "admin/channels_app/channelpolicy/lint.html", context)


def delivery_health(*, now, hours: int = 24) -> list[dict]:
    """Attempts per provider over the last `hours`, by outcome, with bar widths for the admin chart."""
    since = now - timedelta(hours=hours)
    rows = (
        DeliveryAttempt.objects.filter(started_at__gte=since)
        .values("provider")
        .annotate(
            total=Count("id"),
            success=Count("id", filter=Q(outcome=AttemptOutcome.SUCCESS)),
            transient=Count("id", filter=Q(outcome=AttemptOutcome.TRANSIENT)),
            permanent=Count("id", filter=Q(outcome=AttemptOutcome.PERMANENT)),
            in_progress=Count("id", filter=Q(outcome=AttemptOutcome.IN_PROGRESS)),
        )
        .order_by("-total")
    )
    peak = max((r["total"] for r in rows), default=0) or 1
    health = []
    for r in rows:
        bars = [
            (outcome.label, r[outcome.value], OUTCOME_COLOURS[outcome], round(300 * r[outcome.value] / peak))
            for outcome in AttemptOutcome
            if r[outcome.value]
        ]
        rate = 100 * r["success"] / r["total"] if r["total"] else 0
        health.append({"provider": r["provider"], "total": r["total"], "success_rate": rate, "bars": bars})
    return health


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "started_at",
        "message_link",
        "number",
        "provider",
        "outcome_tag",
        "took",
        "response_short",
    ]
    list_filter = ["outcome", "provider", "message__channel", ("started_at", admin.DateFieldListFilter)]
    search_fields = ["=message__id", "provider_message_id", "response", "message__recipient__external_id"]
    list_select_related = ["message"]
    date_hierarchy = "started_at"
    show_full_result_count = False

    change_list_template = "admin/channels_app/deliveryattempt/change_list.html"

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "health": delivery_health(now=timezone.now())}
        return super().changelist_view(request, extra_context=extra_context)

    @admin.display(description="Message", ordering="message")
    def message_link(self, obj: DeliveryAttempt) -> str:
        url = reverse("admin:orchestrator_message_change", args=[obj.message_id])
        return format_html('<a href="{}">#{} {}</a>', url, obj.message_id, obj.message.channel)

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_tag(self, obj: DeliveryAttempt) -> str:
        return _badge(obj.outcome.replace("_", " "), OUTCOME_COLOURS.get(obj.outcome, "#374151"))

    @admin.display(description="Took")
    def took(self, obj: DeliveryAttempt) -> str:
        if obj.finished_at is None:
            return "—"
        return f"{(obj.finished_at - obj.started_at).total_seconds() * 1000:.0f} ms"

    @admin.display(description="Provider said")
    def response_short(self, obj: DeliveryAttempt) -> str:
        return _short(obj.response, 60)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["number", "provider", "started_at", "finished_at", "outcome", "provider_message_id", "response"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class FailureKindFilter(admin.SimpleListFilter):
    title = "why it failed"
    parameter_name = "why"

    def lookups(self, request, model_admin):
        return [
            ("exhausted", "Retries exhausted"),
            ("permanent", "Permanent provider error"),
            ("receipt", "Bounce / failure receipt"),
            ("unreachable", "No contact point"),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "exhausted":
                return queryset.filter(last_error__startswith="Gave up after")
            case "receipt":
                return queryset.filter(
                    Q(last_error__startswith="bounced") | Q(last_error__startswith="failed")
                )
            case "unreachable":
                return queryset.filter(last_error__contains="contact point")
            case "permanent":
                return (
                    queryset.exclude(last_error__startswith="Gave up after")
                    .filter(delivery_attempts__outcome=AttemptOutcome.PERMANENT)
                    .distinct()
                )
        return queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Failed messages: what, to whom, after how many tries and why; "retry now" re-queues them."""

    list_display = ["id", "failed_at", "channel", "recipient", "error", "attempts"]
    list_filter = [
        FailureKindFilter,
        "channel",
        "purpose",
        "provider",
        ("failed_at", admin.DateFieldListFilter),
    ]
    search_fields = ["=id", "recipient__external_id", "last_error", "provider_message_id"]
    list_select_related = ["recipient"]
    date_hierarchy = "failed_at"
    ordering = ["-failed_at", "-id"]
    actions = ["retry_now"]
    inlines = [DeliveryAttemptInline]
    show_full_result_count = False
    fields = [
        "recipient",
        "channel",
        "purpose",
        "status_tag",
        "summary",
        "content",
        "to_address",
        "provider",
        "provider_message_id",
        "attempts",
        "last_error",
        "accepted_at",
        "sent_at",
        "failed_at",
    ]
    readonly_fields = fields

    @admin.display(description="Last error")
    def error(self, obj: DeadLetter) -> str:
        return _short(obj.last_error, 60)

    @admin.display(description="Status")
    def status_tag(self, obj: DeadLetter) -> str:
        return status_badge(obj.status)

    change_form_template = "admin/channels_app/deadletter/change_form.html"

    def has_retry_permission(self, request, obj=None) -> bool:
        """Retrying re-sends: the messaging team's call (channels_app.change_deadletter)."""
        return allowed(request.user, RETRY_PERM, obj)

    @admin.action(description="Retry now (fresh retry budget)", permissions=["retry"])
    def retry_now(self, request, queryset):
        retried = self._retry(queryset.values_list("pk", flat=True))
        self.message_user(
            request,
            f"{retried} message{'s' if retried != 1 else ''} queued for delivery again.",
            messages.SUCCESS,
        )

    @staticmethod
    def _retry(message_ids) -> int:
        retried = 0
        for message_id in message_ids:
            try:
                message_delivery_retry(message_id=message_id)
                retried += 1
            except ValueError:
                continue  # no longer failed (someone else retried it)
        return retried

    def get_urls(self):
        return [
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name="channels_app_deadletter_retry",
            ),
            *super().get_urls(),
        ]

    def retry_view(self, request, object_id):
        """The change page's "Retry now" button (POST): the same service as the list action."""
        letter = self.get_object(request, object_id)
        if letter is None:
            raise Http404("No such dead letter (already retried?).")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_retry_permission(request, letter):
            raise explain(request.user, RETRY_PERM, letter)
        if self._retry([letter.pk]):
            self.message_user(request, f"Message #{letter.pk} queued for delivery again.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:orchestrator_message_change", args=[letter.pk]))
        self.message_user(request, f"Message #{letter.pk} is no longer failed.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:channels_app_deadletter_changelist"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_retry": self.has_retry_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


CIRCUIT_COLOURS = {
    CircuitState.CLOSED: "#047857",
    CircuitState.OPEN: "#dc2626",
    CircuitState.HALF_OPEN: "#b45309",
}


@admin.register(ProviderCircuit)
class ProviderCircuitAdmin(admin.ModelAdmin):
    """Each provider's circuit breaker: open means its channel fails over to the next provider until
    the retry time, when one trial call decides. "Close" puts a provider back at once."""

    list_display = [
        "provider",
        "channel_order",
        "state_tag",
        "failures",
        "retry_at",
        "last_error_short",
        "updated_at",
    ]
    list_filter = ["state"]
    search_fields = ["provider", "last_error"]
    readonly_fields = [f.name for f in ProviderCircuit._meta.fields]
    actions = ["close_circuits"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="State", ordering="state")
    def state_tag(self, obj: ProviderCircuit) -> str:
        return _badge(obj.get_state_display(), CIRCUIT_COLOURS.get(obj.state, "#374151"))

    @admin.display(description="Channel (order)")
    def channel_order(self, obj: ProviderCircuit) -> str:
        for channel in Channel.values:
            names = [p.name for p in providers_for_channel(channel=channel)]
            if obj.provider in names:
                return f"{channel} (#{names.index(obj.provider) + 1} of {len(names)})"
        return "not configured now"

    @admin.display(description="Last error")
    def last_error_short(self, obj: ProviderCircuit) -> str:
        return _short(obj.last_error, 70)

    @admin.action(description="Close the circuit (the provider is back)")
    def close_circuits(self, request, queryset):
        now = timezone.now()
        n = sum(circuit_close(provider=c.provider, now=now) for c in queryset)
        self.message_user(request, f"Closed {n} circuit{'s' if n != 1 else ''}.", messages.SUCCESS)


# --- templates ------------------------------------------------------------------------------------------


class VariantFormSet(forms.BaseInlineFormSet):
    """Validates the template as a whole (every variant parsed, checked and linted when rendered with
    sample values), the same checks as the API, before anything is saved."""

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        locales = {}
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or not data.get("locale"):
                continue
            locales[data["locale"]] = {k: data.get(k) or "" for k in TEMPLATE_FIELDS if data.get(k)}
        parent = self.instance
        try:
            template_definition_validate(
                key=parent.key or "template",
                channel=parent.channel,
                purpose=parent.purpose,
                default_locale=parent.default_locale,
                locales=locales,
            )
        except TemplateInvalid as exc:
            raise forms.ValidationError(
                [str(p) for p in exc.problems] + [f"{k}: {' '.join(v)}" for k, v in exc.field_errors.items()]
            ) from exc


class TemplateVariantInline(admin.StackedInline):
    model = TemplateVariant
    formset = VariantFormSet
    extra = 0
    min_num = 1
    fields = ["locale", "subject", "title", "body", "action_url"]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in ("subject", "title", "action_url"):
            kwargs["widget"] = forms.TextInput(attrs={"size": 90, "class": "orch-liquid"})
        elif db_field.name == "body":
            kwargs["widget"] = forms.Textarea(attrs={"rows": 5, "cols": 90, "class": "orch-liquid"})
        return super().formfield_for_dbfield(db_field, request, **kwargs)


class TemplatePreviewForm(forms.Form):
    recipient = forms.CharField(max_length=200, help_text="A recipient's external id.")
    data = forms.JSONField(required=False, help_text='Variables for {{ data.* }}, e.g. {"plan": "Pro"}.')


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = [
        "key",
        "name",
        "channel",
        "purpose",
        "locales",
        "default_locale",
        "revision",
        "updated_at",
    ]
    list_filter = ["channel", "purpose"]
    search_fields = ["key", "name", "variants__body", "variants__subject", "variants__title"]
    readonly_fields = ["revision", "created_at", "updated_at"]
    fields = ["key", "name", "channel", "purpose", "default_locale", "revision", "created_at", "updated_at"]
    inlines = [TemplateVariantInline]
    change_form_template = "admin/channels_app/messagetemplate/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("variants")

    def get_search_results(self, request, queryset, search_term):
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), False

    @admin.display(description="Locales")
    def locales(self, obj: MessageTemplate) -> str:
        return ", ".join(v.locale for v in obj.variants.all())

    def get_readonly_fields(self, request, obj=None):
        # The key is how senders name the template: fixed once created.
        return [*self.readonly_fields, "key"] if obj else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        # A channel owner edits the templates of their own channels (orchestrator.authority).
        return allowed(request.user, "channels_app.change_messagetemplate", obj)

    def has_delete_permission(self, request, obj=None):
        return allowed(request.user, "channels_app.delete_messagetemplate", obj)

    def save_model(self, request, obj, form, change):
        perm = "channels_app.change_messagetemplate" if change else "channels_app.add_messagetemplate"
        if not allowed(request.user, perm, obj):
            raise PermissionDenied(f"{obj.channel} is not one of your channels.")
        if change:
            obj.revision += 1  # a new revision: caches recompile, approved campaigns notice the change
        super().save_model(request, obj, form, change)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="channels_app_messagetemplate_preview",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request, object_id):
        """Render the saved template for one recipient (their locale, their attributes, the data given)."""
        template = self.get_object(request, object_id)
        if template is None or request.method != "POST":
            return JsonResponse({"error": "POST a recipient to preview a saved template."}, status=404)
        form = TemplatePreviewForm(request.POST)
        if not form.is_valid():
            return JsonResponse({"errors": form.errors}, status=400)
        recipient = Recipient.objects.filter(external_id=form.cleaned_data["recipient"]).first()
        if recipient is None:
            return JsonResponse(
                {"errors": {"recipient": ["No recipient with this external id."]}}, status=400
            )
        data = form.cleaned_data.get("data") or {}
        if not isinstance(data, dict):
            return JsonResponse({"errors": {"data": ["Expected a JSON object."]}}, status=400)
        preview = template_preview(template=template, recipient=recipient, data=data)
        r = preview.rendered
        return JsonResponse(
            {
                "recipient": recipient.external_id,
                "recipient_locale": recipient.locale or "(none)",
                "locale": r.locale,
                "content": r.content,
                "error": str(r.problem) if r.problem else None,
                "lint": preview.lint,
                "sandbox": r.sandbox,
            }
        )
