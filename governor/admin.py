"""The governor in the admin: cap rules and quiet hours editable by the messaging team, channel pauses
through the services, and a governor page (volume, outcomes by rule, the deferred queue, who spends caps)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import connection
from django.http import HttpResponseBadRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from simple_history.admin import SimpleHistoryAdmin

from orchestrator.admin import PageAdmin
from orchestrator.authority import authorize
from orchestrator.forms import ISODurationFormField
from orchestrator.limits import duration_iso
from orchestrator.models import Channel, Purpose
from orchestrator.text import duration_text

from .holdout import GLOBAL_SCOPE, holdout_sql
from .models import CapRule, ChannelPause, GlobalHoldout, GovernorOverview, PauseMode, QuietHours
from .pauses import PAUSE_PERM, PauseError
from .selectors import governor_overview
from .services import channel_pause, channel_resume

CHANNEL_CHOICES = Channel.choices
PURPOSE_CHOICES = Purpose.choices


def _listed(values: list[str], empty: str = "all") -> str:
    return ", ".join(values) if values else empty


class CapRuleForm(forms.ModelForm):
    channels = forms.MultipleChoiceField(
        choices=CHANNEL_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: the rule covers every channel.",
    )
    purposes = forms.MultipleChoiceField(
        choices=PURPOSE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="Messages of these purposes count against the rule and are limited by it.",
    )

    class Meta:
        model = CapRule
        fields = ["name", "limit", "window", "channels", "purposes", "enabled"]
        field_classes = {"window": ISODurationFormField}
        help_texts = {"window": "A rolling window: P1D for a day, PT4H for four hours, P7D for a week."}

    def clean_limit(self):
        limit = self.cleaned_data["limit"]
        if limit is not None and limit < 1:
            raise forms.ValidationError("The limit must be at least 1.")
        return limit


@admin.register(CapRule)
class CapRuleAdmin(SimpleHistoryAdmin):
    history_list_display = ["history_source"]

    form = CapRuleForm
    list_display = ["name", "limit", "window_text", "channels_text", "purposes_text", "enabled", "updated_at"]
    list_editable = ["limit", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name"]

    @admin.display(description="Window", ordering="window")
    def window_text(self, obj: CapRule) -> str:
        return f"{duration_text(obj.window)} ({duration_iso(obj.window)})"

    @admin.display(description="Channels")
    def channels_text(self, obj: CapRule) -> str:
        return _listed(obj.channels, "all channels")

    @admin.display(description="Purposes")
    def purposes_text(self, obj: CapRule) -> str:
        return _listed(obj.purposes, "—")


class QuietHoursForm(forms.ModelForm):
    channels = forms.MultipleChoiceField(
        choices=CHANNEL_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every channel is kept quiet.",
    )
    exempt_purposes = forms.MultipleChoiceField(
        choices=PURPOSE_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="These may still go out during the quiet hours.",
    )

    class Meta:
        model = QuietHours
        fields = ["name", "channels", "start", "end", "exempt_purposes", "enabled"]
        help_texts = {
            "start": "In each recipient's own time zone, e.g. 21:00.",
            "end": "E.g. 08:00; earlier than the start means the next morning.",
        }


@admin.register(QuietHours)
class QuietHoursAdmin(SimpleHistoryAdmin):
    history_list_display = ["history_source"]

    form = QuietHoursForm
    list_display = ["name", "window", "channels_text", "exempt_text", "enabled", "updated_at"]
    list_editable = ["enabled"]
    list_filter = ["enabled"]

    @admin.display(description="Local time")
    def window(self, obj: QuietHours) -> str:
        overnight = " (overnight)" if obj.end < obj.start else ""
        return f"{obj.start:%H:%M}–{obj.end:%H:%M}{overnight}"

    @admin.display(description="Channels")
    def channels_text(self, obj: QuietHours) -> str:
        return _listed(obj.channels, "all channels")

    @admin.display(description="Exempt")
    def exempt_text(self, obj: QuietHours) -> str:
        return _listed(obj.exempt_purposes, "none")


class ChannelPauseForm(forms.ModelForm):
    class Meta:
        model = ChannelPause
        fields = ["channel", "mode", "note"]


@admin.register(ChannelPause)
class ChannelPauseAdmin(SimpleHistoryAdmin):
    """Pausing is adding a pause (through channel_pause); resuming is the action (channel_resume)."""

    form = ChannelPauseForm
    history_list_display = ["history_source"]
    list_display = ["channel", "mode", "state", "note", "paused_at", "paused_by", "resumed_at", "resumed_by"]
    list_filter = ["channel", "mode", ("resumed_at", admin.EmptyFieldListFilter)]
    actions = ["resume", "switch_to_suppress", "switch_to_defer"]
    readonly_fields = ["paused_at", "paused_by", "resumed_at", "resumed_by"]

    @admin.display(description="State")
    def state(self, obj: ChannelPause) -> str:
        colour, text = ("#dc2626", "paused") if obj.active else ("#6b7280", "resumed")
        return format_html('<strong style="color:{}">{}</strong>', colour, text)

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        pause = channel_pause(
            channel=obj.channel, mode=obj.mode, note=obj.note, by=request.user.get_username()
        )
        obj.pk, obj.paused_at, obj.paused_by = pause.pk, pause.paused_at, pause.paused_by
        obj._state.adding = False

    @admin.action(description="Resume the selected channels (release what they held)", permissions=["add"])
    def resume(self, request, queryset):
        for channel in sorted(
            set(queryset.filter(resumed_at__isnull=True).values_list("channel", flat=True))
        ):
            released = channel_resume(channel=channel, by=request.user.get_username())
            self.message_user(request, f"{channel} resumed; {released} held message(s) released.")

    def _switch(self, request, queryset, mode):
        for pause in queryset.filter(resumed_at__isnull=True):
            channel_pause(channel=pause.channel, mode=mode, note=pause.note, by=request.user.get_username())
            self.message_user(request, f"{pause.channel} now paused in {mode} mode.", messages.INFO)

    @admin.action(description="Switch the selected pauses to suppress", permissions=["add"])
    def switch_to_suppress(self, request, queryset):
        self._switch(request, queryset, PauseMode.SUPPRESS)

    @admin.action(description="Switch the selected pauses to defer", permissions=["add"])
    def switch_to_defer(self, request, queryset):
        self._switch(request, queryset, PauseMode.DEFER)


@admin.register(GovernorOverview)
class GovernorOverviewAdmin(PageAdmin):
    """The governor page: listed in the app list like a model, it renders the overview instead."""

    def get_urls(self):
        return [
            path(
                "pause/<str:channel>/",
                self.admin_site.admin_view(self.pause_view),
                name="governor_channel_pause",
            ),
            *super().get_urls(),
        ]

    def pause_view(self, request, channel):
        """The pause toggle (policy page, overview): POST action=pause (mode, note) or action=resume."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        authorize(request.user, PAUSE_PERM)
        action = request.POST.get("action")
        by = request.user.get_username()
        try:
            if action == "pause":
                pause = channel_pause(
                    channel=channel,
                    mode=request.POST.get("mode") or PauseMode.DEFER,
                    note=request.POST.get("note", "")[:500],
                    by=by,
                )
                self.message_user(request, f"{channel} paused ({pause.get_mode_display().lower()}).")
            elif action == "resume":
                released = channel_resume(channel=channel, by=by)
                self.message_user(request, f"{channel} resumed; {released} held message(s) released.")
            else:
                return HttpResponseBadRequest("action: expected pause or resume.")
        except PauseError as exc:
            return HttpResponseBadRequest(f"{exc.field}: {exc.detail}")
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
            target = reverse("admin:governor_governoroverview_changelist")
        return HttpResponseRedirect(target)

    def changelist_view(self, request, extra_context=None):
        context = {
            **self.admin_site.each_context(request),
            "title": "Governor",
            "opts": self.model._meta,
            "channels": Channel.choices,
            **governor_overview(now=timezone.now()),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/governor/overview.html", context)


class GlobalHoldoutForm(forms.ModelForm):
    purposes = forms.MultipleChoiceField(
        choices=[(p.value, p.label) for p in (Purpose.ENGAGEMENT, Purpose.PROMOTIONAL)],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Held-out recipients get no messages of these purposes, from any source.",
    )

    class Meta:
        model = GlobalHoldout
        fields = ["share", "purposes", "note"]
        labels = {"share": "Share held out"}


@admin.register(GlobalHoldout)
class GlobalHoldoutAdmin(admin.ModelAdmin):
    """One row: the list opens its form (created with share 0 the first time it is saved)."""

    form = GlobalHoldoutForm
    readonly_fields = ["held_out_now", "updated_at"]
    fields = ["share", "purposes", "note", "held_out_now", "updated_at"]

    def has_add_permission(self, request):
        return not GlobalHoldout.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if GlobalHoldout.objects.filter(pk=1).exists():
            return HttpResponseRedirect(reverse("admin:governor_globalholdout_change", args=[1]))
        return HttpResponseRedirect(reverse("admin:governor_globalholdout_add"))

    def save_model(self, request, obj, form, change):
        obj.pk = 1
        super().save_model(request, obj, form, change)

    @admin.display(description="Recipients held out now")
    def held_out_now(self, obj: GlobalHoldout) -> str:
        if not obj or not obj.share:
            return "None (share 0: the holdout is off)."
        from orchestrator.models import Recipient

        held, params = holdout_sql(scope=GLOBAL_SCOPE, recipient_column="id", share=obj.share)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT COUNT(*), SUM(CASE WHEN {held} THEN 1 ELSE 0 END) FROM {Recipient._meta.db_table}",
                params,
            )
            total, count = cursor.fetchone()
        return f"{count or 0} of {total} recipients ({float(obj.share) * 100:g} % share)."
