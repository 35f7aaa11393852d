"""The governor's policy: cap rules, quiet hours and channel pauses (the decision lives in services)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from orchestrator.audit import audited
from orchestrator.models import Channel, Purpose
from orchestrator.text import duration_text


def _validate_choices(values, allowed, label: str, *, allow_empty: bool) -> None:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValidationError(f"Expected a list of {label}s.", code="invalid")
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValidationError(
            f"Unknown {label}(s): {', '.join(unknown)}; expected any of {', '.join(allowed)}.",
            code=f"invalid_{label}",
        )
    if len(set(values)) != len(values):
        raise ValidationError(f"A {label} is listed twice.", code="duplicate")
    if not values and not allow_empty:
        raise ValidationError(f"Name at least one {label}.", code="required")


def validate_channels(values) -> None:
    _validate_choices(values, Channel.values, "channel", allow_empty=True)


def validate_purposes(values) -> None:
    _validate_choices(values, Purpose.values, "purpose", allow_empty=False)


def validate_exempt_purposes(values) -> None:
    _validate_choices(values, Purpose.values, "purpose", allow_empty=True)


def validate_window(value: timedelta) -> None:
    if value is None or value <= timedelta(0):
        raise ValidationError("The window must be a positive duration (e.g. PT4H, P1D).", code="invalid")


class CapRule(models.Model):
    """At most `limit` messages of `purposes` on `channels` (empty: all) per recipient per rolling `window`.

    Every enabled rule applies (AND); the most restrictive decides. A message counts against a rule, and
    is limited by it, when its purpose is in `purposes` and its channel in `channels` (or channels is empty).
    """

    name = models.CharField(max_length=200, unique=True)
    limit = models.PositiveIntegerField(help_text="Messages allowed per window (at least 1).")
    window = models.DurationField(help_text="Rolling window, e.g. 24:00:00 or 4:00:00.")
    channels = models.JSONField(
        default=list, blank=True, validators=[validate_channels], help_text="Empty: all channels."
    )
    purposes = models.JSONField(
        default=list, validators=[validate_purposes], help_text="Which messages count and are limited."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    history = audited(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(limit__gte=1), name="caprule_limit_positive"),
            models.CheckConstraint(condition=Q(window__gt=timedelta(0)), name="caprule_window_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.limit is not None and self.limit < 1:
            errors["limit"] = "The limit must be at least 1."
        try:
            validate_window(self.window)
        except ValidationError as exc:
            errors["window"] = exc.messages
        if errors:
            raise ValidationError(errors)

    def applies_to(self, *, channel: str, purpose: str) -> bool:
        return purpose in self.purposes and (not self.channels or channel in self.channels)

    @property
    def window_text(self) -> str:
        return duration_text(self.window)


class QuietHours(models.Model):
    """No message on `channels` between local `start` and `end` (may cross midnight) in each recipient's
    own time zone, except `exempt_purposes`; a message that falls inside waits for the window's end."""

    name = models.CharField(max_length=200, unique=True)
    channels = models.JSONField(default=list, blank=True, validators=[validate_channels])
    start = models.TimeField(help_text="Local time the quiet hours begin, e.g. 21:00.")
    end = models.TimeField(help_text="Local time they end, e.g. 08:00 (earlier than start: next day).")
    exempt_purposes = models.JSONField(default=list, blank=True, validators=[validate_exempt_purposes])
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    history = audited(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "quiet hours"
        constraints = [
            models.CheckConstraint(condition=~Q(start=models.F("end")), name="quiethours_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.start:%H:%M}–{self.end:%H:%M})"

    def clean(self) -> None:
        if self.start is not None and self.start == self.end:
            raise ValidationError({"end": "Quiet hours must end at a different time than they start."})

    def applies_to(self, *, channel: str, purpose: str) -> bool:
        return purpose not in self.exempt_purposes and (not self.channels or channel in self.channels)


class PauseMode(models.TextChoices):
    DEFER = "defer", "Defer (hold until resumed)"
    SUPPRESS = "suppress", "Suppress (never send)"


class ChannelPause(models.Model):
    """The messaging team's stop button on one channel: active while `resumed_at` is empty."""

    channel = models.CharField(max_length=10, choices=Channel.choices)
    mode = models.CharField(max_length=10, choices=PauseMode.choices, default=PauseMode.DEFER)
    note = models.TextField(blank=True, default="", help_text="Why (for the team; not shown to recipients).")
    paused_by = models.CharField(max_length=150, blank=True, default="")
    paused_at = models.DateTimeField(default=timezone.now)
    resumed_at = models.DateTimeField(null=True, blank=True)
    resumed_by = models.CharField(max_length=150, blank=True, default="")
    history = audited()

    class Meta:
        ordering = ["-paused_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel"], condition=Q(resumed_at__isnull=True), name="channelpause_one_active"
            ),
            models.CheckConstraint(
                condition=Q(channel__in=Channel.values), name="channelpause_channel_valid"
            ),
        ]

    def __str__(self) -> str:
        state = "active" if self.resumed_at is None else f"resumed {self.resumed_at:%Y-%m-%d %H:%M}"
        return f"{self.channel} paused ({self.mode}, {state})"

    @property
    def active(self) -> bool:
        return self.resumed_at is None


def holdout_default_purposes() -> list[str]:
    return [Purpose.ENGAGEMENT.value, Purpose.PROMOTIONAL.value]


class GlobalHoldout(models.Model):
    """The global holdout: a stable share of recipients who get no engagement or promotional messages
    at all, so the orchestrator's overall lift can be measured against them. One row (pk 1); share 0 is off.
    """

    share = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("0.5"))],
        help_text="Fraction of recipients held out, from 0 (off) to 0.5: 0.05 holds out 5 %.",
    )
    purposes = models.JSONField(
        default=holdout_default_purposes,
        blank=True,
        validators=[validate_exempt_purposes],
        help_text="Purposes the held-out recipients never get (transactional and alert always go).",
    )
    note = models.TextField(blank=True, default="", help_text="Why, and since when (for the team).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "global holdout"
        verbose_name_plural = "global holdout"
        constraints = [
            models.CheckConstraint(
                condition=Q(share__gte=Decimal("0")) & Q(share__lte=Decimal("0.5")),
                name="globalholdout_share_range",
            ),
        ]

    def __str__(self) -> str:
        return f"Global holdout: {float(self.share) * 100:g} %" if self.share else "Global holdout: off"

    def clean(self) -> None:
        if set(self.purposes or []) & {Purpose.TRANSACTIONAL, Purpose.ALERT}:
            raise ValidationError({"purposes": "Transactional and alert messages are never held out."})

    @classmethod
    def current(cls) -> GlobalHoldout:
        """The one row (unsaved defaults until the team sets a share)."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)


class GovernorOverview(CapRule):
    """Not data: the admin's governor page (volume, outcomes, rules, the queue) hangs off this proxy."""

    class Meta:
        proxy = True
        verbose_name = "governor overview"
        verbose_name_plural = "governor overview"
