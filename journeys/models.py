"""Journeys: a versioned sequence of steps, the recipients enrolled in it, and each step they ran.

A `Journey` has a lifecycle (draft → proposed → approved → active → paused → archived); its steps live
in `JourneyVersion`s (immutable once approved). An `Enrollment` stays on the version it entered and is
advanced by the scheduler when its `next_run_at` comes; every step it runs leaves one `StepRun`.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone as dj_timezone

from orchestrator.audit import audited
from orchestrator.models import AUTO_CHANNEL, Channel, Event, Message, Recipient


class JourneyStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PROPOSED = "proposed", "Proposed"
    APPROVED = "approved", "Approved"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    ARCHIVED = "archived", "Archived"


class ReviewOutcome(models.TextChoices):
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class ReentryPolicy(models.TextChoices):
    NEVER = "never", "Never re-enter"
    AFTER_EXIT = "after_exit", "After the previous run ends"
    COOLDOWN = "cooldown", "After a cool-down"


class Journey(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    owner_channel = models.CharField(
        max_length=10, choices=Channel.choices, blank=True, default="", help_text="The owning team."
    )
    status = models.CharField(max_length=10, choices=JourneyStatus.choices, default=JourneyStatus.DRAFT)
    # The approved version new enrollments enter (enrollments keep the version they entered).
    live_version = models.ForeignKey(
        "JourneyVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Denormalised from the live version so the event hook finds triggered journeys with one indexed query.
    trigger_event = models.CharField(max_length=200, blank=True, default="", db_index=True)
    reentry = models.CharField(max_length=12, choices=ReentryPolicy.choices, default=ReentryPolicy.AFTER_EXIT)
    reentry_cooldown = models.DurationField(null=True, blank=True)
    # Every channel the latest version's sends may use (`auto`: all of them) and the owner channel:
    # what a channel owner must own to edit, propose or read it (orchestrator.authority).
    channels = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The proposal under review (or last reviewed), and the review's outcome the proposer reads.
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    proposed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_outcome = models.CharField(max_length=10, choices=ReviewOutcome.choices, blank=True, default="")
    review_comment = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    history = audited(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=JourneyStatus.values), name="journey_status_valid"),
        ]
        permissions = [
            ("propose_journey", "Can propose a journey for review"),
            ("approve_journey", "Can approve a proposed journey"),
            ("reject_journey", "Can reject a proposed journey"),
            ("activate_journey", "Can activate a journey"),
            ("pause_journey", "Can pause a journey"),
            ("archive_journey", "Can archive a journey"),
            ("revise_journey", "Can start a new draft version of an approved journey"),
            ("view_report_journey", "Can read journey reports"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    def proposal_channels(self) -> frozenset[str]:
        """The authority's view of a proposal: the channels it uses."""
        return frozenset(self.channels or ())


class JourneyVersion(models.Model):
    """One JSON definition of a journey (CONTRACT.md). Editable while a draft; frozen once approved."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    history = audited()

    class Meta:
        ordering = ["journey", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["journey", "number"], name="journeyversion_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.journey.slug} v{self.number}"

    def save(self, *args, **kwargs):
        # Approved versions are what enrollments run on: their steps never change (a change is a new version).
        if self.pk is not None:
            stored = (
                JourneyVersion.objects.filter(pk=self.pk).values_list("definition", "approved_at").first()
            )
            if stored and stored[1] is not None and stored[0] != self.definition:
                raise ValidationError(f"{self} is approved: its definition cannot change.", code="frozen")
        super().save(*args, **kwargs)

    @property
    def frozen(self) -> bool:
        return self.approved_at is not None

    @property
    def steps(self) -> list[dict]:
        return list((self.definition or {}).get("steps") or [])


class EnrollmentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    CONVERTED = "converted", "Converted"
    EXITED = "exited", "Exited"
    # Stopped because advancing it raised: `error` says why; the rest of its batch went on.
    ERRORED = "errored", "Errored"


class Waiting(models.TextChoices):
    NOTHING = "", "Due"
    TIME = "time", "A wait"
    EVENT = "event", "An event"
    MESSAGE = "message", "A deferred message"


class EnrollmentTrigger(models.TextChoices):
    EVENT = "event", "Product event"
    API = "api", "API"
    ADMIN = "admin", "Admin action"


class Enrollment(models.Model):
    """One recipient's run through one version of a journey."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="enrollments")
    version = models.ForeignKey(JourneyVersion, on_delete=models.PROTECT, related_name="enrollments")
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="enrollments")
    status = models.CharField(
        max_length=10, choices=EnrollmentStatus.choices, default=EnrollmentStatus.ACTIVE
    )
    trigger = models.CharField(
        max_length=10, choices=EnrollmentTrigger.choices, default=EnrollmentTrigger.API
    )
    trigger_event = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # Where it is: the step to run (or being waited on), and what it waits for.
    step_id = models.CharField(max_length=100, blank=True, default="")
    seq = models.PositiveIntegerField(default=0, help_text="Step runs so far (the next StepRun's number).")
    waiting = models.CharField(max_length=10, choices=Waiting.choices, blank=True, default="")
    wait_event = models.CharField(max_length=200, blank=True, default="")
    waiting_run = models.ForeignKey(
        "StepRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    wait_message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    last_message = models.ForeignKey(
        Message,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        help_text="The previous send (for `engaged` branches).",
    )
    channels_used = models.JSONField(default=list, blank=True)
    step_started_at = models.DateTimeField(null=True, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True)

    entered_at = models.DateTimeField(default=dj_timezone.now)
    goal_deadline = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=300, blank=True, default="")
    error = models.TextField(
        blank=True, default="", help_text="Why the scheduler stopped this enrollment (status errored)."
    )
    converted_at = models.DateTimeField(
        null=True, blank=True, help_text="When the goal event happened (the conversion's time)."
    )

    # The journey's holdout, assigned once at entry from (recipient, journey): held-out entrants run the
    # journey without any of its sends and are the control group of its report.
    held_out = models.BooleanField(default=False)
    holdout_share = models.DecimalField(
        max_digits=4, decimal_places=3, default=0, help_text="The journey's holdout share when it entered."
    )

    class Meta:
        ordering = ["-entered_at", "-id"]
        indexes = [
            # The scheduler's claim: active enrollments whose time came, oldest first.
            models.Index(fields=["next_run_at", "id"], name="enrollment_due", condition=Q(status="active")),
            # Events wake / convert a recipient's active enrollments.
            models.Index(
                fields=["recipient"], name="enrollment_recipient_active", condition=Q(status="active")
            ),
            models.Index(fields=["journey", "status"], name="enrollment_journey_status"),
            # Reports take a journey's entry cohort by date range.
            models.Index(fields=["journey", "entered_at"], name="enrollment_journey_entered"),
        ]
        constraints = [
            # One active run per recipient and journey (re-entry races end here).
            models.UniqueConstraint(
                fields=["journey", "recipient"],
                condition=Q(status="active"),
                name="enrollment_one_active_per_recipient",
            ),
            models.CheckConstraint(
                condition=Q(status__in=EnrollmentStatus.values), name="enrollment_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recipient.external_id} in {self.journey.name} ({self.status})"


class StepRunStatus(models.TextChoices):
    WAITING = "waiting", "Waiting"
    DEFERRED = "deferred", "Send deferred by the governor"
    SENT = "sent", "Sent (cleared by the governor)"
    SKIPPED = "skipped", "Skipped"
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"


class StepRun(models.Model):
    """One step run by one enrollment: exactly once (unique per enrollment and step number)."""

    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="step_runs")
    seq = models.PositiveIntegerField(help_text="Position in this enrollment's run (0, 1, 2...).")
    step_id = models.CharField(max_length=100)
    step_type = models.CharField(max_length=20)
    status = models.CharField(max_length=10, choices=StepRunStatus.choices)
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="step_runs"
    )
    detail = models.TextField(blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["enrollment", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["enrollment", "seq"], name="steprun_once_per_enrollment_step"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.step_id} ({self.status})"


PROPERTY_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def validate_property_filter(value) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Expected a JSON object such as {"plan": "pro"}.', code="invalid")
    for key, item in value.items():
        if not PROPERTY_KEY_RE.fullmatch(key) or "__" in key or key.isdigit():
            raise ValidationError(
                f"{key!r}: property names are letters, digits, _, - and . (no double underscore).",
                code="invalid_key",
            )
        if isinstance(item, dict | list):
            raise ValidationError(f"{key!r}: compare with a plain value (text, number, true/false).")
        if isinstance(item, str) and "\x00" in item:
            raise ValidationError(f"{key!r}: the value contains a NUL character.")


def validate_property_key(value) -> None:
    if value and (not PROPERTY_KEY_RE.fullmatch(value) or "__" in value or value.isdigit()):
        raise ValidationError("A property name: letters, digits, _, - and . (no double underscore).")


def validate_lookback(value) -> None:
    if value is None or value.total_seconds() <= 0:
        raise ValidationError("The lookback window must be a positive duration (e.g. 7 00:00:00).")
    if value.days > 366:
        raise ValidationError("The lookback window is at most a year.")


class ConversionDefinition(models.Model):
    """What counts as a conversion outside journeys: a product event (optionally with matching
    properties), credited to the messages that reached the recipient within the lookback window."""

    name = models.CharField(max_length=200, unique=True)
    event = models.CharField(max_length=200, db_index=True, help_text="The product event, e.g. purchase.")
    property_filter = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_property_filter],
        help_text='Only events whose properties match all of these, e.g. {"plan": "pro"}. Empty: every one.',
    )
    lookback = models.DurationField(
        default=timedelta(days=7),
        validators=[validate_lookback],
        help_text="Messages that reached the recipient this long before the event get credit (7 00:00:00).",
    )
    value_property = models.CharField(
        max_length=100,
        blank=True,
        default="",
        validators=[validate_property_key],
        help_text="The event property holding the revenue, e.g. amount (blank: conversions only).",
    )
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(lookback__gt=timedelta(0)), name="conversion_lookback_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Report(Journey):
    """Not data: the admin's measurement pages (attribution, sequences, lift) hang off this proxy."""

    class Meta:
        proxy = True
        verbose_name = "report"
        verbose_name_plural = "reports"


# --- campaigns --------------------------------------------------------------------------------------


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PROPOSED = "proposed", "Proposed"
    APPROVED = "approved", "Approved"
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"


CAMPAIGN_FINAL = frozenset({CampaignStatus.DONE, CampaignStatus.CANCELLED})


class ScheduleKind(models.TextChoices):
    NOW = "now", "As soon as approved"
    AT = "at", "At a time"
    LOCAL_TIME = "local_time", "At a local time in each recipient's zone"


class Campaign(models.Model):
    """A one-off message to a segment: inline content or a template, sent through the one pipeline.

    Once scheduled, its audience is written down (one CampaignRecipient per member, with the moment it is
    due: the same for everyone, or the local time in each recipient's zone); the due work claims due
    members in batches and sends them set-based, so nobody is sent twice and a cancel stops the rest.
    """

    name = models.CharField(max_length=200)
    segment = models.ForeignKey("orchestrator.Segment", on_delete=models.PROTECT, related_name="campaigns")
    channel = models.CharField(max_length=10, help_text="A channel, or auto (the next best per recipient).")
    purpose = models.CharField(max_length=20)
    template = models.ForeignKey(
        "channels_app.MessageTemplate",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="campaigns",
    )
    template_revision = models.PositiveIntegerField(
        null=True, blank=True, help_text="The template revision that was approved."
    )
    content = models.JSONField(
        default=dict, blank=True, help_text="Inline content when there is no template."
    )
    data = models.JSONField(default=dict, blank=True, help_text="Variables for the template ({{ data.* }}).")
    priority = models.PositiveSmallIntegerField(default=50)
    expires_at = models.DateTimeField(null=True, blank=True)
    schedule_kind = models.CharField(max_length=10, choices=ScheduleKind.choices, default=ScheduleKind.NOW)
    send_at = models.DateTimeField(null=True, blank=True, help_text="When it starts (schedule at).")
    local_time = models.TimeField(null=True, blank=True, help_text="Each recipient's local time.")
    local_date = models.DateField(
        null=True, blank=True, help_text="The day of the local time (blank: the next one in each zone)."
    )
    throttle_per_minute = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT)

    # Who made it, proposed it and reviewed it (the authority's proposal: channel owners propose, the
    # messaging team approves, nobody approves their own), and the review the proposer reads.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_outcome = models.CharField(max_length=10, choices=ReviewOutcome.choices, blank=True, default="")
    review_comment = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    proposed_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When its audience was written down.")
    finished_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    # The due work's bookkeeping.
    next_run_at = models.DateTimeField(null=True, blank=True, help_text="When the due work looks at it next.")
    # The throttle's window (a throttled campaign is sent by one worker at a time, which counts it here).
    window_started_at = models.DateTimeField(null=True, blank=True)
    window_sent = models.PositiveIntegerField(default=0)
    audience = models.PositiveIntegerField(default=0, help_text="Members when the audience was written down.")
    note = models.TextField(blank=True, default="", help_text="The last thing worth knowing (why it waits).")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["next_run_at"],
                name="campaign_due",
                condition=Q(status__in=["scheduled", "sending"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=CampaignStatus.values), name="campaign_status_valid"
            ),
            models.CheckConstraint(condition=Q(priority__lte=100), name="campaign_priority_range"),
        ]
        permissions = [
            ("propose_campaign", "Can propose a campaign for review"),
            ("approve_campaign", "Can approve a proposed campaign"),
            ("reject_campaign", "Can reject a proposed campaign"),
            ("cancel_campaign", "Can cancel a campaign"),
        ]

    def __str__(self) -> str:
        return self.name

    def proposal_channels(self) -> frozenset[str]:
        """The authority's view of a proposal: its channel (`auto`: every channel)."""
        return frozenset(Channel.values) if self.channel == AUTO_CHANNEL else frozenset({self.channel})

    @property
    def approved_by(self):
        return self.reviewed_by if self.review_outcome == ReviewOutcome.APPROVED else None

    @property
    def source_ref(self) -> str:
        """What its messages carry in Message.source_ref (segments find them by the id prefix)."""
        return f"{self.pk} · {self.name}"[:200]


class MemberState(models.TextChoices):
    PENDING = "pending", "Not decided yet"
    DECIDED = "decided", "Decided by the pipeline"
    REFUSED = "refused", "Refused before the governor"
    CANCELLED = "cancelled", "Cancelled"


class CampaignRecipient(models.Model):
    """One member of a campaign's audience: when it is due and what became of it (exactly once)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="members")
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="+", db_index=False)
    due_at = models.DateTimeField()
    state = models.CharField(max_length=10, choices=MemberState.choices, default=MemberState.PENDING)
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    detail = models.TextField(blank=True, default="", help_text="Why it was refused.")
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["campaign", "due_at", "recipient"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "recipient"], name="campaignrecipient_once"),
        ]
        indexes = [
            # The claim: a campaign's due members, by due time then recipient id.
            models.Index(
                fields=["campaign", "due_at", "recipient"],
                name="campaignrecipient_due",
                condition=Q(state="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recipient.external_id} in the campaign {self.campaign.name} ({self.state})"
