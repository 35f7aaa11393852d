"""Channel personalities (one editable policy per channel) and delivery records (one row per attempt)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from orchestrator.audit import audited
from orchestrator.models import AUTO_CHANNEL, Channel, Message, MessageStatus, Purpose


class ChannelPolicy(models.Model):
    """A channel's job and limits: what the lint enforces and how long a message stays worth sending.

    One row per channel, installed with sane defaults by a data migration and editable in the admin.
    """

    channel = models.CharField(max_length=10, choices=Channel.choices, unique=True)
    job = models.CharField(
        max_length=300,
        help_text="The channel's job in one sentence; every lint reason starts from it.",
    )
    allowed_purposes = models.JSONField(
        default=list, blank=True, help_text="Purposes this channel may carry; empty means all."
    )
    subject_required = models.BooleanField(default=False, help_text="Refuse messages without a subject.")
    title_required = models.BooleanField(default=False, help_text="Warn about messages without a title.")
    context_required = models.BooleanField(
        default=False, help_text="Refuse messages without an action_url inside the product."
    )
    product_url_prefixes = models.JSONField(
        default=list,
        blank=True,
        help_text='URLs that count as "inside the product", e.g. ["app://", "/"].',
    )
    title_max_chars = models.PositiveIntegerField(null=True, blank=True)
    body_max_chars = models.PositiveIntegerField(null=True, blank=True)
    body_max_words = models.PositiveIntegerField(null=True, blank=True)
    segment_chars = models.PositiveIntegerField(
        null=True, blank=True, help_text="SMS: characters per segment; longer bodies get a warning."
    )
    max_actions = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="How many actions (links, buttons) one message may carry."
    )
    marketing_terms = models.JSONField(
        default=list,
        blank=True,
        help_text="Words that make a transactional or alert message look like marketing.",
    )
    default_ttl = models.DurationField(
        null=True,
        blank=True,
        help_text="expires_at applied when the caller gives none (ISO 8601 or HH:MM:SS); blank: never.",
    )
    purpose_fit = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "How well the channel's job fits each purpose, 0 (never chosen by `auto`) to 10 (its very job), "
            'e.g. {"transactional": 8, "promotional": 8}. Next-best-channel choice ranks by it.'
        ),
    )
    updated_at = models.DateTimeField(auto_now=True)
    history = audited(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["channel"]
        verbose_name = "channel policy"
        verbose_name_plural = "channel policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(channel__in=Channel.values), name="channelpolicy_channel_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} policy"


class AttemptOutcome(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress (claimed)"
    SUCCESS = "success", "Success"
    TRANSIENT = "transient", "Transient error (will retry)"
    PERMANENT = "permanent", "Permanent error"


class DeliveryAttempt(models.Model):
    """One hand-off of a message to its provider: when, how it went, what the provider said.

    The row is written `in_progress` before the provider call (the claim), so a duplicate task finds it
    and does nothing; a claim older than the lease is presumed lost and may be taken over.
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="delivery_attempts")
    number = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=100)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=12, choices=AttemptOutcome.choices)
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    response = models.TextField(blank=True, default="", help_text="Provider response summary.")
    retry_at = models.DateTimeField(
        null=True, blank=True, help_text="After a transient error: when the next attempt is due."
    )

    class Meta:
        ordering = ["message", "number"]
        constraints = [
            models.UniqueConstraint(fields=["message", "number"], name="deliveryattempt_unique_number"),
            # At most one claim per message at any time: the guard against a duplicate task.
            models.UniqueConstraint(
                fields=["message"],
                condition=Q(outcome="in_progress"),
                name="deliveryattempt_one_in_progress",
            ),
        ]
        indexes = [models.Index(fields=["outcome", "-started_at"], name="deliveryattempt_outcome_time")]

    def __str__(self) -> str:
        return f"attempt {self.number} of message {self.message_id}: {self.outcome}"


class DeadLetterManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(status=MessageStatus.FAILED)


class DeadLetter(Message):
    """Failed messages (permanent error or retries exhausted), for the admin's dead-letter list."""

    objects = DeadLetterManager()

    class Meta:
        proxy = True
        verbose_name = "dead letter"
        verbose_name_plural = "dead letters"


class CircuitState(models.TextChoices):
    CLOSED = "closed", "Closed (sending)"
    OPEN = "open", "Open (skipped until retry_at)"
    HALF_OPEN = "half_open", "Half-open (one trial call)"


class ProviderCircuit(models.Model):
    """A circuit breaker per provider, shared by every worker: a provider that keeps failing is skipped
    for a while (its channel fails over to the next provider), then tried once before it closes again."""

    provider = models.CharField(max_length=100, unique=True)
    state = models.CharField(max_length=10, choices=CircuitState.choices, default=CircuitState.CLOSED)
    failures = models.PositiveIntegerField(default=0, help_text="Transient failures in a row.")
    opened_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(
        null=True, blank=True, help_text="While open: when one trial call may go through."
    )
    last_error = models.TextField(blank=True, default="")
    last_success_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["provider"]
        verbose_name = "provider circuit"
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=CircuitState.values), name="providercircuit_state_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}: {self.state}"


class DeliveryWake(models.Model):
    """The one "a delivery wake-up is on its way" flag (a single row): the accepted messages are the
    delivery queue, and a burst of sends enqueues one django-q2 wake-up while this is set, not one task
    each. Set by `channels_app.delivery.deliveries_wake`, cleared by the drain that wakes; a flag older
    than CHANNELS["WAKE_TTL"] counts as unset (its task may have been lost)."""

    requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "delivery wake-up"

    def __str__(self) -> str:
        return f"wake-up requested at {self.requested_at}" if self.requested_at else "no wake-up pending"


TEMPLATE_FIELDS = ("subject", "title", "body", "action_url")


class MessageTemplate(models.Model):
    """Channel content written once in Liquid, with a variant per locale (channels_app.templating).

    `revision` goes up on every change: compiled templates are cached by (id, revision), and a campaign
    approved on one revision will not send another.
    """

    key = models.SlugField(max_length=100, unique=True, help_text="What senders name: template=<key>.")
    name = models.CharField(max_length=200, blank=True, default="")
    channel = models.CharField(
        max_length=10,
        choices=[*Channel.choices, (AUTO_CHANNEL, "Any channel (auto)")],
        help_text="The channel this content is written for; its lint checks every rendered variant.",
    )
    purpose = models.CharField(
        max_length=20,
        choices=Purpose.choices,
        blank=True,
        default="",
        help_text="The purpose it is written for (the lint judges it); blank: any.",
    )
    default_locale = models.CharField(
        max_length=35, help_text="The variant used when none fits the recipient's locale."
    )
    revision = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        verbose_name = "template"
        verbose_name_plural = "templates"

    def __str__(self) -> str:
        return self.name or self.key


class TemplateVariant(models.Model):
    """One locale's content of a template: Liquid in every field."""

    template = models.ForeignKey(MessageTemplate, on_delete=models.CASCADE, related_name="variants")
    locale = models.CharField(max_length=35, help_text="A BCP 47 tag: en, pt-BR, ja-JP.")
    subject = models.TextField(blank=True, default="")
    title = models.TextField(blank=True, default="")
    body = models.TextField(blank=True, default="")
    action_url = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["template", "locale"]
        verbose_name = "locale variant"
        constraints = [
            models.UniqueConstraint(fields=["template", "locale"], name="templatevariant_unique_locale"),
        ]

    def __str__(self) -> str:
        return f"{self.template.key} ({self.locale})"

    @property
    def fields(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in TEMPLATE_FIELDS if getattr(self, name)}
