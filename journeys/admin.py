"""Journeys in the admin: journeys with their versions as a readable step flow, lifecycle buttons that call
the services, enrollments with their step history, and an action enrolling a filtered recipient list."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from orchestrator.admin import ReadOnlyAdminMixin
from orchestrator.limits import duration_iso
from orchestrator.models import Channel, Recipient

from . import reports, selectors, services
from .definition import DefinitionInvalid, definition_compile, duration_format, step_describe
from .measurement import MODEL_LABELS, REACHED_CHOICES
from .models import (
    ConversionDefinition,
    Enrollment,
    Journey,
    JourneyStatus,
    JourneyVersion,
    Report,
    StepRun,
)

# Glyphs from the fonts every desktop ships (DejaVu): no missing-glyph boxes.
STEP_ICONS = {"send": "✉", "wait": "⌛", "wait_for_event": "⚑", "branch": "⑂", "exit": "■"}
JOURNEY_COLOURS = {
    JourneyStatus.DRAFT: "#6b7280",
    JourneyStatus.PROPOSED: "#d97706",
    JourneyStatus.APPROVED: "#2563eb",
    JourneyStatus.ACTIVE: "#16a34a",
    JourneyStatus.PAUSED: "#ea580c",
    JourneyStatus.ARCHIVED: "#9ca3af",
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
                "icon": STEP_ICONS.get(step.get("type"), "•"),
                "text": step_describe(step),
                "channel": step.get("channel", ""),
            }
        )
    return rows


def _transition(request, journey: Journey, action: str) -> bool:
    try:
        services.journey_transition(journey=journey, action=action, now=timezone.now(), user=request.user)
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
    return act


class JourneyVersionInline(admin.TabularInline):
    model = JourneyVersion
    extra = 0
    fields = ["number", "created_at", "approved_at", "step_count"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="Steps")
    def step_count(self, obj: JourneyVersion) -> int:
        return len(obj.steps)


@admin.register(Journey)
class JourneyAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "status_tag",
        "owner_channel",
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
        "status",
        "live_version",
        "trigger_event",
        "reentry",
        "cooldown",
        "created_at",
        "updated_at",
    ]
    inlines = [JourneyVersionInline]
    actions = [_bulk_action(a) for a in ("propose", "approve", "activate", "pause", "archive")]
    change_form_template = "admin/journeys/journey/change_form.html"

    def has_add_permission(self, request):
        return False  # definitions come in through the API (validated JSON)

    def has_delete_permission(self, request, obj=None):
        return False  # archive instead: history stays

    def get_queryset(self, request):
        return selectors.journeys_with_counts().select_related("live_version")

    @admin.display(description="Status", ordering="status")
    def status_tag(self, obj: Journey) -> str:
        colour = JOURNEY_COLOURS.get(obj.status, "#374151")
        return format_html('<span class="orch-badge" style="background:{}">{}</span>', colour, obj.status)

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
        return [
            path(
                "<path:object_id>/transition/<str:action>/",
                self.admin_site.admin_view(self.transition_view),
                name="journeys_journey_transition",
            ),
            *super().get_urls(),
        ]

    def transition_view(self, request, object_id, action):
        journey = get_object_or_404(Journey, pk=object_id)
        allowed = request.method == "POST" and self.has_change_permission(request, journey)
        if allowed and _transition(request, journey, action):
            messages.success(request, f"{journey.slug}: {action} done.")
        return HttpResponseRedirect(reverse("admin:journeys_journey_change", args=[journey.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        journey = self.get_object(request, object_id)
        if journey is not None:
            counts = selectors.journey_counts(journey=journey)
            top = max(counts.values()) or 1
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
                actions_allowed=[a for a, (src, _) in services.TRANSITIONS.items() if journey.status in src],
                burn=selectors.journey_burn(journey=journey, now=timezone.now()),
            )
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


@admin.register(JourneyVersion)
class JourneyVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["journey", "number", "created_at", "approved_at"]
    list_filter = ["journey"]
    readonly_fields = ["journey", "number", "created_at", "approved_at", "flow"]
    exclude = ["definition"]

    @admin.display(description="Steps")
    def flow(self, obj: JourneyVersion) -> str:
        rows = "".join(
            format_html(
                '<li class="orch-step orch-step-{}"><span class="orch-step-icon">{}</span> '
                "<strong>{}</strong> · {}</li>",
                row["type"],
                row["icon"],
                row["id"],
                row["text"],
            )
            for row in steps_view(obj.definition)
        )
        return format_html('<ol class="orch-steps">{}</ol>', format_html(rows)) if rows else "—"


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
        "journey",
        "recipient",
        "status",
        "holdout",
        "step_id",
        "waiting",
        "next_run_at",
        "entered_at",
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
        "waiting",
        "wait_event",
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

    @admin.display(description="Holdout", ordering="held_out")
    def holdout(self, obj: Enrollment) -> str:
        if obj.held_out:
            return format_html(
                '<span class="orch-badge" style="background:#7c3aed" title="{}">held out</span>',
                f"Assigned at entry from (recipient, journey) at a {float(obj.holdout_share) * 100:g} % "
                "share: no sends from this journey; counted in its report as the control group.",
            )
        return f"exposed ({float(obj.holdout_share) * 100:g} % held out)" if obj.holdout_share else "—"


# --- enrolling a filtered recipient list ------------------------------------------------------------


class EnrollForm(forms.Form):
    journey = forms.ModelChoiceField(
        queryset=Journey.objects.filter(status=JourneyStatus.ACTIVE), help_text="Active journeys only."
    )


@admin.action(description="Enroll selected recipients in a journey")
def enroll_in_journey(modeladmin, request, queryset):
    """Two steps: pick an active journey, then enroll (the re-entry policy skips who may not re-enter)."""
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
