"""Journeys in the admin: journeys with their versions as a readable step flow, lifecycle buttons that call
the services, enrollments with their step history, and an action enrolling a filtered recipient list."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from orchestrator.admin import ReadOnlyAdminMixin
from orchestrator.models import Recipient

from . import selectors, services
from .definition import DefinitionInvalid, step_describe
from .models import Enrollment, Journey, JourneyStatus, JourneyVersion, StepRun

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
        "reentry_cooldown",
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
            extra_context.update(
                versions=[
                    {"version": v, "steps": steps_view(v.definition), "live": v.pk == journey.live_version_id}
                    for v in journey.versions.order_by("-number")
                ],
                counts=[(k, n, int(200 * n / top)) for k, n in counts.items()],
                report=selectors.journey_report(journey=journey),
                actions_allowed=[a for a, (src, _) in services.TRANSITIONS.items() if journey.status in src],
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
        "step_id",
        "waiting",
        "next_run_at",
        "entered_at",
        "exit_reason",
    ]
    list_filter = ["journey", "status", "waiting", "trigger"]
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
        "exit_reason",
        "error",
    ]
    readonly_fields = fields


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
