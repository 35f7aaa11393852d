"""Journeys in the admin: journeys with their versions as a readable step flow, lifecycle buttons that call
the services, enrollments with their step history, and an action enrolling a filtered recipient list."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from channels_app.models import MessageTemplate
from orchestrator.admin import ReadOnlyAdminMixin, short_time
from orchestrator.authority import Denied, allowed, explain, user_channels
from orchestrator.icons import step_icon
from orchestrator.limits import duration_iso
from orchestrator.models import AUTO_CHANNEL, Channel, Purpose, Recipient
from orchestrator.pipeline import SendRefused

from . import campaigns, reports, selectors, services
from .builder import (
    STEP_TYPE_LABELS,
    JourneyForm,
    StepFormSet,
    builder_initial,
    builder_read,
    empty_definition,
)
from .definition import DefinitionInvalid, definition_compile, duration_format, step_describe
from .forecast import journey_forecast
from .measurement import MODEL_LABELS, REACHED_CHOICES
from .models import (
    CAMPAIGN_FINAL,
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    ConversionDefinition,
    Enrollment,
    EnrollmentStatus,
    Journey,
    JourneyStatus,
    JourneyVersion,
    MemberState,
    Report,
    ScheduleKind,
    StepRun,
    Waiting,
)
from .review import definition_diff, definition_lint
from .selectors import campaign_progress

JOURNEY_COLOURS = {
    JourneyStatus.DRAFT: "#6b7280",
    JourneyStatus.PROPOSED: "#b45309",
    JourneyStatus.APPROVED: "#2563eb",
    JourneyStatus.ACTIVE: "#15803d",
    JourneyStatus.PAUSED: "#c2410c",
    JourneyStatus.ARCHIVED: "#4b5563",
}


def steps_view(definition: dict) -> list[dict]:
    """The version's steps as numbered rows for the template: icon, id, plain description, channel."""
    rows = []
    for number, step in enumerate(definition.get("steps") or [], start=1):
        rows.append(
            {
                "number": number,
                "id": step.get("id"),
                "type": step.get("type"),
                "icon": step_icon(step.get("type") or ""),
                "text": step_describe(step),
                "channel": step.get("channel", ""),
            }
        )
    return rows


def _transition(request, journey: Journey, action: str, comment: str = "") -> bool:
    try:
        services.journey_transition(
            journey=journey, action=action, now=timezone.now(), user=request.user, comment=comment
        )
    except Denied as exc:
        messages.error(request, exc.detail)
        return False
    except services.JourneyConflict as exc:
        messages.error(request, exc.detail)
        return False
    except DefinitionInvalid as exc:
        messages.error(request, f"{journey.slug} cannot be approved: {exc}")
        return False
    return True


def _bulk_action(action: str):
    def act(modeladmin, request, queryset):
        done = sum(_transition(request, journey, action) for journey in queryset)
        if done:
            messages.success(request, f"{action.title()}: {done} journey{'s' if done != 1 else ''}.")

    act.__name__ = f"journeys_{action}"
    act.short_description = f"{action.title()} selected journeys"
    act.required_perm = f"journeys.{action}_journey"
    return act


class JourneyVersionInline(admin.TabularInline):
    model = JourneyVersion
    extra = 0
    fields = ["number", "created_at", "approved_at", "approved_by", "step_count"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Steps")
    def step_count(self, obj: JourneyVersion) -> int:
        return len(obj.steps)


@admin.register(Journey)
class JourneyAdmin(SimpleHistoryAdmin):
    """Journeys: the list (only those the person may read), a read-only page with the steps as a flow and
    the lifecycle buttons the person may press, the step builder for drafts and the review page."""

    list_display = [
        "slug",
        "name",
        "status_tag",
        "owner_channel",
        "channels_text",
        "live",
        "active",
        "waiting",
        "converted",
        "exited",
        "errored",
        "conversion",
    ]
    list_filter = ["status", "owner_channel"]
    search_fields = ["slug", "name", "trigger_event"]
    readonly_fields = [
        "slug",
        "name",
        "owner_channel",
        "channels_text",
        "status",
        "live_version",
        "trigger_event",
        "reentry",
        "cooldown",
        "created_by",
        "proposed_by",
        "proposed_at",
        "reviewed_by",
        "reviewed_at",
        "review_outcome",
        "review_comment",
        "created_at",
        "updated_at",
    ]
    inlines = [JourneyVersionInline]

    def get_fields(self, request, obj=None):
        # Only what is shown read-only: nothing on this page takes input (no stray editable box).
        return list(self.readonly_fields)

    actions = [_bulk_action(a) for a in ("propose", "approve", "activate", "pause", "archive")]
    change_form_template = "admin/journeys/journey/change_form.html"
    history_list_display = ["status", "history_source"]

    # Object-level permissions through orchestrator.authority (django-rules): the same answer as the API.
    def has_view_permission(self, request, obj=None):
        return allowed(request.user, "journeys.view_journey", obj)

    def has_add_permission(self, request):
        return allowed(request.user, "journeys.add_journey")

    def has_change_permission(self, request, obj=None):
        # The change page is read-only (steps are edited in the builder); it opens for readers too.
        return allowed(request.user, "journeys.view_journey", obj)

    def has_delete_permission(self, request, obj=None):
        return False  # archive instead: history stays

    def get_actions(self, request):
        available = super().get_actions(request)
        return {
            name: entry
            for name, entry in available.items()
            if not hasattr(entry[0], "required_perm") or allowed(request.user, entry[0].required_perm)
        }

    def get_queryset(self, request):
        return selectors.journeys_visible(
            user=request.user, queryset=selectors.journeys_with_counts().select_related("live_version")
        )

    @admin.display(description="Status", ordering="status")
    def status_tag(self, obj: Journey) -> str:
        colour = JOURNEY_COLOURS.get(obj.status, "#374151")
        return format_html('<span class="orch-badge" style="background:{}">{}</span>', colour, obj.status)

    @admin.display(description="Channels")
    def channels_text(self, obj: Journey) -> str:
        return ", ".join(obj.channels or []) or "—"

    @admin.display(description="Live version")
    def live(self, obj: Journey) -> str:
        return f"v{obj.live_version.number}" if obj.live_version else "—"

    @admin.display(description="Active", ordering="n_active")
    def active(self, obj: Journey) -> int:
        return obj.n_active

    @admin.display(description="Waiting", ordering="n_waiting")
    def waiting(self, obj: Journey) -> int:
        return obj.n_waiting

    @admin.display(description="Converted", ordering="n_converted")
    def converted(self, obj: Journey) -> int:
        return obj.n_converted

    @admin.display(description="Exited", ordering="n_exited")
    def exited(self, obj: Journey) -> int:
        return obj.n_exited

    @admin.display(description="Re-entry cool-down")
    def cooldown(self, obj: Journey) -> str:
        return duration_iso(obj.reentry_cooldown) if obj.reentry_cooldown else "—"

    @admin.display(description="Errored", ordering="n_errored")
    def errored(self, obj: Journey) -> str:
        if not obj.n_errored:
            return "0"
        url = reverse("admin:journeys_enrollment_changelist")
        return format_html(
            '<a href="{}?journey__id__exact={}&status__exact=errored" class="orch-errored">{}</a>',
            url,
            obj.pk,
            obj.n_errored,
        )

    @admin.display(description="Conversion")
    def conversion(self, obj: Journey) -> str:
        total = obj.n_active + obj.n_waiting + obj.n_converted + obj.n_exited
        return f"{obj.n_converted / total:.0%}" if total else "—"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("builder/check/", view(self.builder_check_view), name="journeys_journey_builder_check"),
            path("<path:object_id>/steps/", view(self.builder_view), name="journeys_journey_builder"),
            path("<path:object_id>/review/", view(self.review_view), name="journeys_journey_review"),
            path(
                "<path:object_id>/transition/<str:action>/",
                view(self.transition_view),
                name="journeys_journey_transition",
            ),
            *super().get_urls(),
        ]

    def _journey(self, request, object_id) -> Journey:
        journey = get_object_or_404(Journey.objects.select_related("live_version"), pk=object_id)
        if not allowed(request.user, "journeys.view_journey", journey):
            raise PermissionDenied
        return journey

    def transition_view(self, request, object_id, action):
        journey = self._journey(request, object_id)
        posted = request.method == "POST" and action in services.TRANSITIONS
        if posted and _transition(request, journey, action, request.POST.get("comment", "")):
            messages.success(request, f"{journey.slug}: {action} done.")
        return HttpResponseRedirect(reverse("admin:journeys_journey_change", args=[journey.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        journey = self.get_object(request, object_id)
        if journey is not None:
            counts = selectors.journey_counts(journey=journey)
            top = max(counts.values()) or 1
            user = request.user
            enrolled = sum(counts.values())
            extra_context.update(
                versions=[
                    {
                        "version": v,
                        "steps": steps_view(v.definition),
                        "live": v.pk == journey.live_version_id,
                        "holdout": definition_compile(v.definition).holdout_share * 100,
                    }
                    for v in journey.versions.order_by("-number")
                ],
                counts=[(k, n, int(200 * n / top)) for k, n in counts.items()],
                conversion={
                    "converted": counts["converted"],
                    "enrolled": enrolled,
                    "rate": counts["converted"] / enrolled if enrolled else 0,
                },
                report_url=reverse("admin:journeys_report_changelist")
                + "?"
                + urlencode({"journey": journey.slug}),
                can_report=allowed(user, "journeys.view_report_journey", journey),
                actions_allowed=[
                    a
                    for a, (src, _) in services.TRANSITIONS.items()
                    if journey.status in src
                    and a not in ("approve", "reject")
                    and allowed(user, f"journeys.{a}_journey", journey)
                ],
                can_edit_steps=journey.status == JourneyStatus.DRAFT
                and allowed(user, "journeys.change_journey", journey),
                can_review=journey.status == JourneyStatus.PROPOSED
                and allowed(user, "journeys.approve_journey", journey),
                review_outcome=journey.review_outcome,
                burn=selectors.journey_burn(journey=journey, now=timezone.now()),
                # Every field here is read-only (steps change in the builder, status by the buttons above):
                # no Save buttons that would save nothing.
                show_save=False,
                show_save_and_continue=False,
                show_save_and_add_another=False,
                show_delete=False,
            )
        return super().change_view(request, object_id, form_url, extra_context=extra_context)

    # ---- the step builder ----------------------------------------------------------------------------

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        return self._builder(request, journey=None)

    def builder_view(self, request, object_id):
        journey = self._journey(request, object_id)
        if journey.status != JourneyStatus.DRAFT:
            messages.info(
                request,
                f"{journey.slug} is {journey.status}: only a draft's steps can be edited "
                "(pause it, then Revise to start a new version).",
            )
            return HttpResponseRedirect(reverse("admin:journeys_journey_change", args=[journey.pk]))
        if not allowed(request.user, "journeys.change_journey", journey):
            raise PermissionDenied
        return self._builder(request, journey=journey)

    def _builder_forms(self, request, journey: Journey | None, data=None):
        slug = journey.slug if journey else None
        if data is None:
            definition = (
                services.journey_latest_version(journey=journey).definition if journey else empty_definition()
            )
            journey_initial, steps_initial = builder_initial(definition)
            if journey is None:
                owned = user_channels(request.user) or ()
                journey_initial["owner_channel"] = next((c for c in Channel.values if c in owned), "")
                steps_initial = []
            return (
                JourneyForm(initial=journey_initial, user=request.user, fixed_slug=slug),
                StepFormSet(initial=steps_initial, prefix="steps"),
            )
        return (
            JourneyForm(data, initial={"slug": slug} if slug else None, user=request.user, fixed_slug=slug),
            StepFormSet(data, prefix="steps"),
        )

    def _builder(self, request, journey: Journey | None):
        user = request.user
        built = None
        if request.method == "POST":
            journey_form, steps = self._builder_forms(request, journey, request.POST)
            built = builder_read(journey_form, steps, user=user, slug=journey.slug if journey else None)
            if built.valid:
                try:
                    now = timezone.now()
                    if journey is None:
                        journey = services.journey_create(definition=built.definition, now=now, user=user)
                    else:
                        definition = {k: v for k, v in built.definition.items() if k != "slug"}
                        services.journey_update(journey=journey, changes=definition, now=now, user=user)
                    if "_propose" in request.POST:
                        services.journey_transition(journey=journey, action="propose", now=now, user=user)
                        messages.success(
                            request, f"{journey.slug} is proposed: the messaging team reviews it."
                        )
                    else:
                        messages.success(request, f"Draft {journey.slug} saved.")
                    return HttpResponseRedirect(reverse("admin:journeys_journey_change", args=[journey.pk]))
                except DefinitionInvalid as exc:
                    built.journey_errors.extend(str(e) for e in exc.errors)
                except (Denied, services.JourneyConflict) as exc:
                    built.journey_errors.append(exc.detail)
        else:
            journey_form, steps = self._builder_forms(request, journey)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Steps of {journey.name}" if journey else "New journey",
            "opts": self.model._meta,
            "original": journey,
            "journey_form": journey_form,
            "steps": steps,
            "step_rows": [(form, (built.checks if built else {}).get(form.prefix)) for form in steps.forms],
            "journey_errors": built.journey_errors if built else [],
            "step_types": STEP_TYPE_LABELS,
            "owned": user_channels(user),
        }
        return TemplateResponse(request, "admin/journeys/journey/builder.html", context)

    def builder_check_view(self, request):
        """htmx: the whole form in, each step's lint and validation out (out-of-band fragments)."""
        if request.method != "POST" or not (
            allowed(request.user, "journeys.add_journey") or allowed(request.user, "journeys.change_journey")
        ):
            raise PermissionDenied
        slug = request.POST.get("fixed_slug") or None
        journey_form = JourneyForm(request.POST, user=request.user, fixed_slug=slug, initial={"slug": slug})
        steps = StepFormSet(request.POST, prefix="steps")
        built = builder_read(journey_form, steps, user=request.user, slug=slug)
        return TemplateResponse(
            request,
            "admin/journeys/journey/builder_check.html",
            {"checks": built.checks.values(), "journey_errors": built.journey_errors, "valid": built.valid},
        )

    # ---- the review --------------------------------------------------------------------------------

    def review_view(self, request, object_id):
        journey = self._journey(request, object_id)
        can_decide = journey.status == JourneyStatus.PROPOSED and allowed(
            request.user, "journeys.approve_journey", journey
        )
        if request.method == "POST":
            decision = request.POST.get("decision")
            if decision not in ("approve", "reject"):
                messages.error(request, "Choose approve or reject.")
            elif _transition(request, journey, decision, request.POST.get("comment", "")):
                messages.success(request, f"{journey.slug}: {decision}d.")
                return HttpResponseRedirect(reverse("admin:journeys_journey_change", args=[journey.pk]))
            return HttpResponseRedirect(request.path)
        proposal = services.journey_latest_version(journey=journey)
        forecast = journey_forecast(definition=proposal.definition, now=timezone.now())
        rows = forecast.channel_rows()
        live = journey.live_version if journey.live_version_id != proposal.pk else None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Review: {journey.name}",
            "opts": self.model._meta,
            "original": journey,
            "proposal": proposal,
            "steps": steps_view(proposal.definition),
            "live": live,
            "diff": definition_diff(live.definition if live else None, proposal.definition),
            "lint": definition_lint(proposal.definition),
            "forecast": forecast,
            "channel_rows": rows,
            "decision_rows": forecast.decision_rows(),
            "rule_rows": forecast.rule_rows(),
            "chart": {
                "labels": [r["channel"] for r in rows],
                "cleared": [r["cleared"] for r in rows],
                "deferred": [r["deferred"] for r in rows],
                "stopped": [r["stopped"] for r in rows],
            },
            "can_decide": can_decide,
            "can_reject": journey.status == JourneyStatus.PROPOSED
            and allowed(request.user, "journeys.reject_journey", journey),
            "self_proposed": journey.proposed_by_id == request.user.pk,
        }
        return TemplateResponse(request, "admin/journeys/journey/review.html", context)


@admin.register(JourneyVersion)
class JourneyVersionAdmin(ReadOnlyAdminMixin, SimpleHistoryAdmin):
    """Versions are read through their journey's permission (a channel owner sees their own only)."""

    list_display = ["journey", "number", "created_at", "approved_at", "approved_by"]
    history_list_display = ["history_source"]

    def get_queryset(self, request):
        visible = selectors.journeys_visible(user=request.user)
        return super().get_queryset(request).filter(journey__in=visible)

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return allowed(request.user, "journeys.view_journeyversion")
        return allowed(request.user, "journeys.view_journeyversion") and allowed(
            request.user, "journeys.view_journey", obj.journey
        )

    search_fields = ["journey__slug", "journey__name"]
    readonly_fields = ["journey", "number", "created_at", "approved_at", "flow"]
    exclude = ["definition"]

    @admin.display(description="Steps")
    def flow(self, obj: JourneyVersion) -> str:
        rows = format_html_join(
            "",
            '<li class="orch-step orch-step-{}"><span class="orch-step-icon">{}</span> '
            "<strong>{}</strong> · {}</li>",
            ((row["type"], row["icon"], row["id"], row["text"]) for row in steps_view(obj.definition)),
        )
        return format_html('<ol class="orch-steps">{}</ol>', rows) if rows else "—"


class StepRunInline(admin.TabularInline):
    model = StepRun
    extra = 0
    can_delete = False
    fields = ["seq", "step_id", "step_type", "status", "message_link", "detail", "started_at", "finished_at"]
    readonly_fields = fields
    ordering = ["seq"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Message")
    def message_link(self, obj: StepRun) -> str:
        if not obj.message_id:
            return "—"
        url = reverse("admin:orchestrator_message_change", args=[obj.message_id])
        return format_html('<a href="{}">#{}</a>', url, obj.message_id)


@admin.register(Enrollment)
class EnrollmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "journey_name",
        "recipient",
        "status",
        "holdout",
        "step_id",
        "waiting_for",
        "next_run",
        "entered",
        "exit_reason",
    ]
    list_filter = ["journey", "status", "held_out", "waiting", "trigger"]
    search_fields = ["recipient__external_id", "journey__slug"]
    list_select_related = ["journey", "recipient"]
    date_hierarchy = "entered_at"
    show_full_result_count = False
    inlines = [StepRunInline]
    fields = [
        "journey",
        "version",
        "recipient",
        "status",
        "trigger",
        "step_id",
        "waiting_for",
        "next_run_at",
        "channels_used",
        "entered_at",
        "goal_deadline",
        "ended_at",
        "converted_at",
        "exit_reason",
        "holdout",
        "error",
    ]
    readonly_fields = fields

    @admin.display(description="Journey", ordering="journey__name")
    def journey_name(self, obj: Enrollment) -> str:
        return obj.journey.name

    @admin.display(description="Waiting for", ordering="waiting")
    def waiting_for(self, obj: Enrollment) -> str:
        """What a running enrollment waits for; an ended one waits for nothing (not "Due")."""
        if obj.status != EnrollmentStatus.ACTIVE:
            return f"nothing: {obj.get_status_display().lower()}"
        if obj.waiting == Waiting.EVENT and obj.wait_event:
            return f"the event {obj.wait_event}"
        if obj.waiting == Waiting.NOTHING:
            return "nothing: due now"
        return obj.get_waiting_display()

    @admin.display(description="Next run (UTC)", ordering="next_run_at")
    def next_run(self, obj: Enrollment) -> str:
        return short_time(obj.next_run_at) if obj.status == EnrollmentStatus.ACTIVE else "—"

    @admin.display(description="Entered (UTC)", ordering="entered_at")
    def entered(self, obj: Enrollment) -> str:
        return short_time(obj.entered_at)

    @admin.display(description="Holdout", ordering="held_out")
    def holdout(self, obj: Enrollment) -> str:
        if obj.held_out:
            return format_html(
                '<span class="orch-badge" style="background:#7c3aed" title="{}">held out</span>',
                f"Assigned at entry from (recipient, journey) at a {float(obj.holdout_share) * 100:g} % "
                "share: no sends from this journey; counted in its report as the control group.",
            )
        if not obj.holdout_share:
            return "—"
        return format_html(
            '<span title="{}">exposed</span>', f"{float(obj.holdout_share) * 100:g} % of entrants held out"
        )


# --- enrolling a filtered recipient list ------------------------------------------------------------


class EnrollForm(forms.Form):
    journey = forms.ModelChoiceField(
        queryset=Journey.objects.filter(status=JourneyStatus.ACTIVE), help_text="Active journeys only."
    )


@admin.action(description="Enroll selected recipients in a journey")
def enroll_in_journey(modeladmin, request, queryset):
    """Two steps: pick an active journey, then enroll (the re-entry policy skips who may not re-enter)."""
    if not allowed(request.user, "journeys.add_enrollment"):
        refusal = explain(request.user, "journeys.add_enrollment")
        modeladmin.message_user(request, refusal.detail, messages.ERROR)
        return None
    form = EnrollForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        journey = form.cleaned_data["journey"]
        try:
            result = services.enrollments_create_bulk(
                journey=journey, recipient_ids=queryset.values_list("pk", flat=True), now=timezone.now()
            )
        except services.JourneyConflict as exc:
            modeladmin.message_user(request, exc.detail, messages.ERROR)
            return None
        modeladmin.message_user(
            request,
            f"{journey.slug}: {result.enrolled} enrolled, "
            f"{result.skipped} skipped (already in it or re-entry policy).",
            messages.SUCCESS,
        )
        return None
    return TemplateResponse(
        request,
        "admin/journeys/enroll_recipients.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": "Enroll recipients in a journey",
            "form": form,
            "recipients": queryset[:20],
            "count": queryset.count(),
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "opts": modeladmin.model._meta,
            "action": "enroll_in_journey",
        },
    )


def _attach_enroll_action() -> None:
    # The recipient admin belongs to the conversation app; journeys add their action to it from here.
    recipient_admin = admin.site._registry.get(Recipient)
    if recipient_admin is not None and enroll_in_journey not in (recipient_admin.actions or []):
        recipient_admin.actions = [*(recipient_admin.actions or []), enroll_in_journey]


_attach_enroll_action()


# --- measurement: conversion definitions and the reports ---------------------------------------------


class ConversionDefinitionForm(forms.ModelForm):
    property_filter = forms.JSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text='Only events whose properties match all of these, e.g. {"plan": "pro"}. Empty: every one.',
    )

    class Meta:
        model = ConversionDefinition
        fields = ["name", "event", "property_filter", "lookback", "value_property", "enabled", "description"]

    def clean_property_filter(self):
        return self.cleaned_data.get("property_filter") or {}


@admin.register(ConversionDefinition)
class ConversionDefinitionAdmin(admin.ModelAdmin):
    """What counts as a conversion outside journeys; the overall report attributes these."""

    form = ConversionDefinitionForm
    list_display = [
        "name",
        "event",
        "filter_text",
        "lookback_text",
        "value_property",
        "enabled",
        "report_link",
    ]
    list_filter = ["enabled", "event"]
    list_editable = ["enabled"]
    search_fields = ["name", "event", "description"]

    @admin.display(description="Property filter")
    def filter_text(self, obj: ConversionDefinition) -> str:
        return ", ".join(f"{k} = {v!r}" for k, v in sorted(obj.property_filter.items())) or "every event"

    @admin.display(description="Lookback", ordering="lookback")
    def lookback_text(self, obj: ConversionDefinition) -> str:
        return duration_format(obj.lookback)

    @admin.display(description="Report")
    def report_link(self, obj: ConversionDefinition) -> str:
        url = reverse("admin:journeys_report_changelist") + "?" + urlencode({"conversion": obj.name})
        return format_html('<a href="{}">Attribution</a>', url)


REPORT_DEFAULT_DAYS = 30


@admin.register(Report)
class ReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The measurement page: listed under Journeys as "Reports", it renders the report for the filters in
    its query string (a journey's, or the overall one) with charts, and each table as CSV."""

    def has_view_permission(self, request, obj=None):
        return reports.reports_viewable(user=request.user)

    def has_module_permission(self, request):
        return reports.reports_viewable(user=request.user)

    def get_urls(self):
        return [
            path(
                "csv/<str:table>/",
                self.admin_site.admin_view(self.csv_view),
                name="journeys_report_csv",
            ),
            *super().get_urls(),
        ]

    def _report(self, request) -> tuple[dict, dict[str, list[str]]]:
        """The report for the request's filters; bad filters are listed and the defaults used instead."""
        now = timezone.now()
        errors: dict[str, list[str]] = {}
        try:
            filters = reports.report_filters_parse(request.GET, default_days=REPORT_DEFAULT_DAYS, now=now)
        except reports.ReportInputError as exc:
            errors = exc.errors
            filters = reports.report_filters_parse({}, default_days=REPORT_DEFAULT_DAYS, now=now)
        except reports.ReportJourneyNotFound as exc:
            errors = {"journey": [str(exc)]}
            filters = reports.report_filters_parse({}, default_days=REPORT_DEFAULT_DAYS, now=now)
        if filters.journey is None and not reports.reports_overall_viewable(user=request.user):
            # A channel owner's reports are their journeys': the first of them unless one is named.
            mine = reports.reports_visible_journeys(user=request.user).order_by("slug").first()
            if mine is None:
                raise Http404("No journey of yours to report on yet.")
            filters = reports.report_filters_parse(
                {**request.GET.dict(), "journey": mine.slug}, default_days=REPORT_DEFAULT_DAYS, now=now
            )
        if (
            filters.journey is not None
            and not reports.reports_visible_journeys(user=request.user).filter(pk=filters.journey.pk).exists()
        ):
            raise Http404("No such journey.")
        if filters.journey is not None:
            report = reports.journey_report(journey=filters.journey, filters=filters)
        else:
            report = reports.overall_report(filters=filters)
        report["filters"] = filters
        return report, errors

    def changelist_view(self, request, extra_context=None):
        report, errors = self._report(request)
        filters = report["filters"]
        tables = reports.report_tables(report)
        query = request.GET.urlencode()
        for name, table in tables.items():
            table["csv"] = reverse("admin:journeys_report_csv", args=[name]) + (f"?{query}" if query else "")
            table["cells"] = [
                [_cell_text(key, row.get(key)) for key, _ in table["columns"]] for row in table["rows"]
            ]
        shown_to = filters.end - timedelta(days=1) if filters.end else None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Report — {filters.journey.name}"
            if filters.journey
            else "Report — all journeys and channels",
            "opts": self.model._meta,
            "report": report,
            "tables": tables,
            "errors": errors,
            "form": {
                "from": request.GET.get("from")
                or (filters.start.date().isoformat() if filters.start else ""),
                "to": request.GET.get("to") or (shown_to.date().isoformat() if shown_to else ""),
                "journey": filters.journey.slug if filters.journey else "",
                "channel": filters.channel,
                "half_life": request.GET.get("half_life") or reports.duration_iso(filters.half_life),
                "reached": list(filters.reached),
                "conversion": filters.conversion.name if filters.conversion else "",
            },
            "journeys": reports.reports_visible_journeys(user=request.user).order_by("slug"),
            "channels": Channel.choices,
            "reached_choices": list(REACHED_CHOICES),
            "definitions": ConversionDefinition.objects.order_by("name"),
            "models": [(m, MODEL_LABELS[m]) for m in filters.models],
            "chart_data": _chart_data(report, filters.models),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/journeys/report.html", context)

    def csv_view(self, request, table: str):
        if not self.has_view_permission(request):
            raise Http404
        report, _errors = self._report(request)
        tables = reports.report_tables(report)
        if table not in tables:
            raise Http404(f"No table {table!r}.")
        filters = report["filters"]
        name = "-".join(
            part
            for part in (
                "report",
                filters.journey.slug if filters.journey else "all",
                table,
                filters.start.date().isoformat() if filters.start else "",
                (filters.end - timedelta(days=1)).date().isoformat() if filters.end else "",
            )
            if part
        )
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        writer = csv.writer(response)
        spec = tables[table]
        writer.writerow([label for _, label in spec["columns"]])
        for row in spec["rows"]:
            writer.writerow([_csv_cell(row.get(key)) for key, _ in spec["columns"]])
        return response


def _cell_text(key: str, value) -> str:
    """How the page shows a cell: rates as percentages, credit to 2 decimals, nothing as a dash."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if key.endswith("_rate") or key == "share":
            return f"{value * 100:.1f} %"
        return f"{value:,.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} = {v!r}" for k, v in sorted(value.items())) or "—"
    return str(value)


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def _chart_data(report: dict, models: tuple[str, ...]) -> dict:
    """What the page's charts draw (static/orchestrator/reports.js)."""
    channels = [row["channel"] for row in report.get("by_channel", [])]
    return {
        "models": [{"key": m, "label": MODEL_LABELS[m]} for m in models],
        "channels": channels,
        "credit": {m: [row[m] for row in report.get("by_channel", [])] for m in models},
        "value": {m: [row[f"{m}_value"] for row in report.get("by_channel", [])] for m in models},
        "funnel": [
            {"label": row["step"], "entered": row["entered"], "reached": row.get("reached")}
            for row in report.get("funnel", [])
        ],
        "sequences": [
            {"label": row["sequence"], "entrants": row["entrants"], "converted": row["converted"]}
            for row in report.get("sequences", [])[:10]
        ],
        "holdout": report.get("holdout"),
        "trend": report.get("trend", []),
    }


# --- campaigns -------------------------------------------------------------------------------------

CAMPAIGN_COLOURS = {
    CampaignStatus.DRAFT: "#6b7280",
    CampaignStatus.PROPOSED: "#b45309",
    CampaignStatus.APPROVED: "#2563eb",
    CampaignStatus.SCHEDULED: "#7c3aed",
    CampaignStatus.SENDING: "#0e7490",
    CampaignStatus.DONE: "#15803d",
    CampaignStatus.CANCELLED: "#4b5563",
}


class CampaignForm(forms.ModelForm):
    """The campaign as a messaging team writes it; validated by the service (the API's rules)."""

    channel = forms.ChoiceField(choices=[*Channel.choices, (AUTO_CHANNEL, "Auto (next best per recipient)")])
    purpose = forms.ChoiceField(choices=Purpose.choices)
    template = forms.ModelChoiceField(
        queryset=MessageTemplate.objects.all(),
        required=False,
        to_field_name="key",
        help_text="A template with its locale variants — or write the content below.",
    )
    subject = forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 80}))
    title = forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 80}))
    body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 80}))
    action_url = forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 80}))
    data = forms.JSONField(
        required=False, help_text='Template variables ({{ data.* }}), e.g. {"sale": "spring"}.'
    )
    schedule_kind = forms.ChoiceField(
        choices=ScheduleKind.choices, widget=forms.RadioSelect, initial=ScheduleKind.NOW, label="Send"
    )
    send_at = forms.DateTimeField(required=False, help_text="For 'at a time' (UTC), e.g. 2026-03-02 10:00.")
    local_time = forms.TimeField(required=False, help_text="For 'at a local time', e.g. 10:00.")
    local_date = forms.DateField(
        required=False, help_text="Optional: the day (else the next one in each zone)."
    )

    class Meta:
        model = Campaign
        fields = [
            "name",
            "segment",
            "channel",
            "purpose",
            "template",
            "data",
            "priority",
            "expires_at",
            "throttle_per_minute",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        if instance.pk:
            for key in ("subject", "title", "body", "action_url"):
                self.fields[key].initial = (instance.content or {}).get(key, "")
            self.fields["schedule_kind"].initial = instance.schedule_kind
            self.fields["send_at"].initial = instance.send_at
            self.fields["local_time"].initial = instance.local_time
            self.fields["local_date"].initial = instance.local_date

    def input(self) -> dict:
        data = self.cleaned_data
        content = {k: data[k] for k in ("subject", "title", "body", "action_url") if data.get(k)}
        kind = data.get("schedule_kind")
        schedule: dict = {}
        if kind == ScheduleKind.AT and data.get("send_at"):
            schedule = {"at": data["send_at"].isoformat()}
        elif kind == ScheduleKind.LOCAL_TIME and data.get("local_time"):
            schedule = {"local_time": data["local_time"].strftime("%H:%M:%S")}
            if data.get("local_date"):
                schedule["date"] = data["local_date"].isoformat()
        return {
            "name": data.get("name"),
            "segment": data["segment"].pk if data.get("segment") else None,
            "channel": data.get("channel"),
            "purpose": data.get("purpose"),
            "template": data["template"].key if data.get("template") else None,
            "content": content or None,
            "data": data.get("data") or {},
            "priority": data.get("priority") if data.get("priority") is not None else 50,
            "expires_at": data.get("expires_at"),
            "schedule": schedule,
            "throttle_per_minute": data.get("throttle_per_minute"),
        }

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        kind = data.get("schedule_kind")
        if kind == ScheduleKind.AT and not data.get("send_at"):
            self.add_error("send_at", "Give the time to send at.")
        if kind == ScheduleKind.LOCAL_TIME and not data.get("local_time"):
            self.add_error("local_time", "Give the local time, e.g. 10:00.")
        if self.errors:
            return data
        try:
            campaigns._campaign_fields(self.input(), now=timezone.now())
        except campaigns.CampaignInvalid as exc:
            for field, problems in exc.errors.items():
                target = field.split(".")[0]
                target = {"content": "body", "schedule": "schedule_kind"}.get(target, target)
                self.add_error(target if target in self.fields else None, " ".join(problems))
        return data


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = ["name", "status_tag", "segment", "channel", "purpose", "when", "audience", "progress_bar"]
    list_filter = ["status", "channel", "purpose", "schedule_kind"]
    search_fields = ["name", "segment__name", "template__key"]
    list_select_related = ["segment", "template"]
    date_hierarchy = "created_at"
    change_form_template = "admin/journeys/campaign/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "segment", "channel", "purpose", "priority", "expires_at"]}),
        (
            "Content",
            {
                "fields": ["template", "data", "subject", "title", "body", "action_url"],
                "description": "Either a template (rendered per recipient, in their locale) or content here.",
            },
        ),
        ("When", {"fields": ["schedule_kind", "send_at", "local_time", "local_date", "throttle_per_minute"]}),
    ]

    def get_fieldsets(self, request, obj=None):
        if obj is None or obj.status == CampaignStatus.DRAFT:
            return self.fieldsets
        # Past the draft the page reads, it is not edited: the message and the schedule in plain words.
        return [
            (None, {"fields": ["name", "segment", "channel", "purpose", "priority", "expires_at"]}),
            ("Message", {"fields": ["message_view", "data"]}),
            ("When", {"fields": ["when", "throttle_per_minute"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        return ["message_view", "when"] if obj is not None and obj.status != CampaignStatus.DRAFT else []

    @admin.display(description="Content")
    def message_view(self, obj: Campaign) -> str:
        if obj.template_id:
            url = reverse("admin:channels_app_messagetemplate_change", args=[obj.template_id])
            return format_html(
                'Template <a href="{}">{}</a> (revision {}), in each recipient\'s locale',
                url,
                obj.template.key,
                obj.template_revision or obj.template.revision,
            )
        rows = format_html_join("", "<div><strong>{}</strong>: {}</div>", obj.content.items())
        return rows or "—"

    def has_delete_permission(self, request, obj=None):
        return False  # cancel instead: what was sent stays in the history

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.status != CampaignStatus.DRAFT:
            return False  # only drafts are edited; the page stays viewable with its lifecycle and progress
        return allowed(request.user, "journeys.change_campaign", obj)

    def has_view_permission(self, request, obj=None):
        return allowed(request.user, "journeys.view_campaign", obj)

    def has_add_permission(self, request):
        return allowed(request.user, "journeys.add_campaign")

    def get_queryset(self, request):
        return selectors.campaigns_visible(user=request.user, queryset=super().get_queryset(request))

    @admin.display(description="Status", ordering="status")
    def status_tag(self, obj: Campaign) -> str:
        colour = CAMPAIGN_COLOURS.get(obj.status, "#374151")
        return format_html('<span class="orch-badge" style="background:{}">{}</span>', colour, obj.status)

    @admin.display(description="When")
    def when(self, obj: Campaign) -> str:
        if obj.schedule_kind == ScheduleKind.LOCAL_TIME:
            day = f" on {obj.local_date}" if obj.local_date else ""
            return f"{obj.local_time:%H:%M} local{day}"
        if obj.schedule_kind == ScheduleKind.AT:
            return f"{obj.send_at:%Y-%m-%d %H:%M} UTC"
        return "when approved"

    @admin.display(description="Progress")
    def progress_bar(self, obj: Campaign) -> str:
        if not obj.audience:
            return "—"
        done = (
            obj.audience - CampaignRecipient.objects.filter(campaign=obj, state=MemberState.PENDING).count()
        )
        width = int(120 * done / obj.audience)
        return format_html(
            '<span class="orch-bar" style="width:{}px"></span> {} / {}', width, done, obj.audience
        )

    def save_model(self, request, obj, form, change):
        data = form.input()
        if change:
            saved = campaigns.campaign_update(
                campaign=obj, changes=data, now=timezone.now(), user=request.user
            )
        else:
            saved = campaigns.campaign_create(data=data, now=timezone.now(), user=request.user)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def get_urls(self):
        return [
            path(
                "<path:object_id>/campaign/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="journeys_campaign_action",
            ),
            path(
                "<path:object_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="journeys_campaign_progress",
            ),
            *super().get_urls(),
        ]

    def action_view(self, request, object_id, action):
        campaign = get_object_or_404(self.get_queryset(request), pk=object_id)
        back = HttpResponseRedirect(reverse("admin:journeys_campaign_change", args=[campaign.pk]))
        if request.method != "POST" or not self.has_view_permission(request, campaign):
            return back
        now = timezone.now()
        try:
            if action == "test":
                recipient = Recipient.objects.filter(
                    external_id=request.POST.get("test_recipient", "")
                ).first()
                if recipient is None:
                    messages.error(request, "Test send: no recipient with that external id.")
                    return back
                message = campaigns.campaign_test_send(
                    campaign=campaign, recipient=recipient, now=now, user=request.user
                )
                messages.success(
                    request,
                    f"Test sent to {recipient.external_id}: {message.channel}, {message.status}"
                    f"{' — ' + message.reason if message.reason else ''}.",
                )
            else:
                comment = request.POST.get("comment", "")
                campaigns.campaign_transition(
                    campaign=campaign, action=action, now=now, user=request.user, comment=comment
                )
                messages.success(request, f"{campaign.name}: {action} done.")
        except campaigns.CampaignConflict as exc:
            messages.error(request, exc.detail)
        except Denied as exc:
            messages.error(request, exc.detail)
        except SendRefused as exc:
            messages.error(request, f"Test send refused: {exc}")
        return back

    def progress_view(self, request, object_id):
        campaign = get_object_or_404(self.get_queryset(request), pk=object_id)
        return JsonResponse(
            {"status": campaign.status, "note": campaign.note, **campaign_progress(campaign=campaign)}
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        campaign = self.get_object(request, object_id)
        if campaign is not None:
            progress = campaign_progress(campaign=campaign)
            extra_context.update(
                campaign=campaign,
                progress=progress,
                bars={
                    "By status": _bars(progress["by_status"]),
                    "By channel": _bars(progress["by_channel"]),
                    "By deciding rule": _bars(progress["by_rule"]),
                },
                actions_allowed=[
                    a
                    for a, (src, _) in campaigns.TRANSITIONS.items()
                    if campaign.status in src
                    and allowed(
                        request.user, campaigns.ACTION_PERMS.get(a, f"journeys.{a}_campaign"), campaign
                    )
                ],
                can_test=campaign.status not in CAMPAIGN_FINAL
                and allowed(request.user, campaigns.ACTION_PERMS["test"], campaign),
                schedule_text=self.when(campaign),
            )
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


def _bars(counts: dict[str, int]) -> list[dict]:
    top = max(counts.values(), default=0) or 1
    return [{"label": k, "value": v, "percent": int(100 * v / top)} for k, v in counts.items()]
