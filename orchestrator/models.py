"""The conversation: recipients, how to reach them, what they want, what they did and what they got.

`Message` is the one history table for every channel and every source; the governor counts it, the
channels deliver it, journeys point at it, and the admin timeline reads it.
"""

from __future__ import annotations

import hashlib
import secrets
import zoneinfo

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone as dj_timezone
from simple_history import register as history_register

from .audit import AuditedHistory, audited


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    PUSH = "push", "Push"
    SMS = "sms", "SMS"
    IN_APP = "in_app", "In-app"


AUTO_CHANNEL = "auto"


class Purpose(models.TextChoices):
    TRANSACTIONAL = "transactional", "Transactional"
    ALERT = "alert", "Alert"
    ENGAGEMENT = "engagement", "Engagement"
    PROMOTIONAL = "promotional", "Promotional"


class MessageStatus(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    DEFERRED = "deferred", "Deferred"
    SUPPRESSED = "suppressed", "Suppressed"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    OPENED = "opened", "Opened"
    CLICKED = "clicked", "Clicked"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


# Statuses a message can never leave: nothing is sent, retried or re-decided from them.
FINAL_STATUSES = frozenset({MessageStatus.SUPPRESSED, MessageStatus.FAILED, MessageStatus.EXPIRED})
# Statuses that mean the governor let the message through (it spends the recipient's cap).
CLEARED_STATUSES = frozenset(
    {
        MessageStatus.ACCEPTED,
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.OPENED,
        MessageStatus.CLICKED,
        MessageStatus.FAILED,
    }
)


# The one table of legal status moves (enforced by orchestrator.history). A new message starts in a
# decision's status (accepted, deferred, suppressed, expired); the governor re-decides deferred ones
# (deferred → deferred keeps it waiting with a new time); delivery, receipts and the inbox move cleared
# ones forward along sent → delivered → opened → clicked, or to failed (the dead letter), from which an
# operator's "retry now" is the one way back. Nothing leaves suppressed or expired.
MESSAGE_TRANSITIONS: dict[str, frozenset[str]] = {
    # "" is a new message: a decision's outcome, or a send made elsewhere and recorded here.
    "": frozenset(
        {
            MessageStatus.ACCEPTED,
            MessageStatus.DEFERRED,
            MessageStatus.SUPPRESSED,
            MessageStatus.EXPIRED,
            MessageStatus.SENT,
            MessageStatus.DELIVERED,
        }
    ),
    MessageStatus.DEFERRED: frozenset(
        {MessageStatus.ACCEPTED, MessageStatus.DEFERRED, MessageStatus.SUPPRESSED, MessageStatus.EXPIRED}
    ),
    MessageStatus.ACCEPTED: frozenset(
        {
            MessageStatus.SENT,
            MessageStatus.DELIVERED,
            MessageStatus.OPENED,
            MessageStatus.CLICKED,
            MessageStatus.FAILED,
            MessageStatus.EXPIRED,
            MessageStatus.SUPPRESSED,
        }
    ),
    MessageStatus.SENT: frozenset(
        {
            MessageStatus.DELIVERED,
            MessageStatus.OPENED,
            MessageStatus.CLICKED,
            MessageStatus.FAILED,
            MessageStatus.EXPIRED,
        }
    ),
    MessageStatus.DELIVERED: frozenset({MessageStatus.OPENED, MessageStatus.CLICKED, MessageStatus.FAILED}),
    MessageStatus.OPENED: frozenset({MessageStatus.CLICKED}),
    MessageStatus.CLICKED: frozenset(),
    MessageStatus.FAILED: frozenset({MessageStatus.ACCEPTED}),
    MessageStatus.SUPPRESSED: frozenset(),
    MessageStatus.EXPIRED: frozenset(),
}
# Engagement order of cleared messages: a receipt may move a message up this ladder, never down.
ENGAGEMENT_RANK = {
    MessageStatus.ACCEPTED: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.OPENED: 3,
    MessageStatus.CLICKED: 4,
}


class Source(models.TextChoices):
    API = "api", "API"
    JOURNEY = "journey", "Journey step"
    CAMPAIGN = "campaign", "Campaign"
    ADMIN = "admin", "Admin"
    # A confirmation answering the recipient's own inbound message (SMS STOP / START / HELP): it may go
    # to a number that just opted out (carriers require the one confirmation) and no cap holds it.
    REPLY = "reply", "Reply to the recipient"
    # A send another system made (an ESP newsletter, a legacy SMS service), recorded so the governor
    # counts it and the timeline shows it: never decided or delivered here (orchestrator.recording).
    EXTERNAL = "external", "Another system"


def validate_timezone(value: str) -> None:
    """Reject anything that is not an IANA time zone name known to zoneinfo."""
    if not value or value not in zoneinfo.available_timezones():
        raise ValidationError(
            "%(value)s is not an IANA time zone name (e.g. Europe/Paris, America/New_York).",
            code="invalid_timezone",
            params={"value": value},
        )


class Recipient(models.Model):
    external_id = models.CharField(max_length=200, unique=True, help_text="The id your services use.")
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    locale = models.CharField(max_length=35, blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True, help_text="Last product visit (in-app).")
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    erased_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Erased (orchestrator.erasure): an anonymous row."
    )

    class Meta:
        ordering = ["external_id"]
        permissions = [
            ("inbox_recipient", "Can fetch a recipient's in-app inbox (marks it delivered)"),
            ("erase_recipient", "Can erase a recipient's personal data (the right to erasure)"),
        ]
        indexes = [
            # GET recipients/ pages by (-created_at, -id) with a cursor: an index range scan per page.
            models.Index(fields=["-created_at", "-id"], name="recipient_created"),
        ]

    def __str__(self) -> str:
        return self.external_id

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class ContactPoint(models.Model):
    """One way to reach a recipient on one channel: an email address, an E.164 phone, a push token,
    or (in-app) the single row that says the recipient uses the product."""

    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="contact_points")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    address = models.CharField(max_length=512, blank=True, default="")
    opted_in = models.BooleanField(default=True)
    # Suppression: the provider told us this address cannot be reached (hard bounce, spam complaint,
    # invalid push token). Nothing goes to it until an operator clears it.
    undeliverable_at = models.DateTimeField(null=True, blank=True)
    undeliverable_reason = models.CharField(max_length=500, blank=True, default="")
    soft_bounces = models.PositiveSmallIntegerField(
        default=0, help_text="Soft bounces in a row; suppressed at settings.CONSENT['SOFT_BOUNCE_LIMIT']."
    )
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["channel", "address"]
        indexes = [
            # Inbound SMS and ESP events find the contact point by its address.
            models.Index(fields=["channel", "address"], name="contactpoint_channel_address"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["recipient", "channel", "address"], name="contactpoint_unique_address"
            ),
            models.CheckConstraint(
                condition=Q(channel__in=Channel.values), name="contactpoint_channel_valid"
            ),
            models.CheckConstraint(
                condition=Q(channel="in_app") | ~Q(address=""), name="contactpoint_address_required"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()}: {self.address or 'enabled'}"

    @property
    def reachable(self) -> bool:
        """Opted in and not undeliverable (the rule `orchestrator.selectors.REACHABLE` applies in SQL)."""
        return self.opted_in and self.undeliverable_at is None


class Preference(models.Model):
    """The recipient's word on one channel × purpose. `opted_in=False` is an opt-out the governor obeys."""

    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="preferences")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    opted_in = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["channel", "purpose"]
        constraints = [
            models.UniqueConstraint(fields=["recipient", "channel", "purpose"], name="preference_unique"),
            models.CheckConstraint(condition=Q(channel__in=Channel.values), name="preference_channel_valid"),
            models.CheckConstraint(condition=Q(purpose__in=Purpose.values), name="preference_purpose_valid"),
        ]

    def __str__(self) -> str:
        state = "opted in" if self.opted_in else "opted out"
        return f"{self.channel}/{self.purpose}: {state}"


class ChangeSource(models.TextChoices):
    """Who changed a preference or a contact point's state."""

    LINK = "link", "Preference link (the recipient)"
    API = "api", "API"
    ADMIN = "admin", "Admin"
    PROVIDER = "provider", "Provider (SMS keyword, ESP or push service)"


class ChangeKind(models.TextChoices):
    UNSUBSCRIBE = "unsubscribe", "Unsubscribed"
    RESUBSCRIBE = "resubscribe", "Resubscribed"
    STOP = "stop", "SMS STOP"
    START = "start", "SMS START"
    COMPLAINT = "complaint", "Spam complaint"
    HARD_BOUNCE = "hard_bounce", "Hard bounce"
    SOFT_BOUNCES = "soft_bounces", "Soft bounces in a row"
    TOKEN_LOST = "token_lost", "Push token invalid"
    CLEARED = "cleared", "Suppression cleared"


# Kinds that lose permission to reach someone (the permission-burn monitor counts these).
BURN_KINDS = frozenset({ChangeKind.UNSUBSCRIBE, ChangeKind.STOP, ChangeKind.COMPLAINT, ChangeKind.TOKEN_LOST})


class PreferenceChange(models.Model):
    """Every change of a recipient's word or reachability, with its source: the consent record.

    `purpose` blank means the whole channel; `address` names the contact point when one was concerned;
    `message` is the message that prompted it (the link's email, the SMS answered with STOP, the bounced
    message), which lets the burn monitor attribute opt-outs to a journey or campaign.
    """

    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="preference_changes")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    purpose = models.CharField(max_length=20, choices=Purpose.choices, blank=True, default="")
    address = models.CharField(max_length=512, blank=True, default="")
    kind = models.CharField(max_length=20, choices=ChangeKind.choices)
    opted_in = models.BooleanField(help_text="The state after the change (reachable after it).")
    source = models.CharField(max_length=10, choices=ChangeSource.choices)
    detail = models.CharField(max_length=500, blank=True, default="")
    message = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="preference_changes"
    )
    created_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["created_at"], name="prefchange_time"),
            models.Index(fields=["recipient", "-created_at"], name="prefchange_recipient_time"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(channel__in=Channel.values), name="prefchange_channel_valid"),
            models.CheckConstraint(condition=Q(kind__in=ChangeKind.values), name="prefchange_kind_valid"),
            models.CheckConstraint(
                condition=Q(source__in=ChangeSource.values), name="prefchange_source_valid"
            ),
        ]

    def __str__(self) -> str:
        what = f"{self.channel}/{self.purpose}" if self.purpose else self.channel
        return f"{self.get_kind_display()} {what} ({self.get_source_display()})"


class PermissionBurn(PreferenceChange):
    """The permission-burn monitor's place in the admin (a page, not a list)."""

    class Meta:
        proxy = True
        verbose_name = "permission-burn monitor"
        verbose_name_plural = "permission-burn monitor"


class Event(models.Model):
    """Something the recipient did in the product: triggers journeys, counts as conversions."""

    # Indexed by (recipient, -occurred_at) below; a separate FK index would only slow writes.
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="events", db_index=False)
    name = models.CharField(max_length=200)
    properties = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField(default=dj_timezone.now)
    received_at = models.DateTimeField(default=dj_timezone.now, editable=False)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["recipient", "-occurred_at"], name="event_recipient_time"),
            models.Index(fields=["name", "-occurred_at"], name="event_name_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name} by {self.recipient.external_id} at {self.occurred_at:%Y-%m-%d %H:%M}"


class Message(models.Model):
    """Every message to every recipient on every channel, with the governor's decision and its delivery."""

    # Indexed by (recipient, -created_at, -id) below; a separate FK index would only slow writes.
    recipient = models.ForeignKey(
        Recipient, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    requested_channel = models.CharField(
        max_length=10, blank=True, default="", help_text="What the caller asked for ('auto' or a channel)."
    )
    channel_reason = models.TextField(blank=True, default="", help_text="Why this channel was chosen.")
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    priority = models.PositiveSmallIntegerField(default=50)
    content = models.JSONField(default=dict)
    status = models.CharField(max_length=12, choices=MessageStatus.choices)

    # The governor's decision.
    rule = models.CharField(max_length=200, blank=True, default="", help_text="The rule that decided.")
    reason = models.TextField(blank=True, default="")
    deliver_after = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True, help_text="Channel-policy warnings.")

    # Where it came from.
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.API)
    source_ref = models.CharField(
        max_length=200, blank=True, default="", help_text="Journey/step, campaign or caller reference."
    )
    # A send recorded from another system (source = external): which system, its id there (unique per
    # system), and when it was recorded here (created_at and sent_at are when it was sent).
    source_system = models.CharField(max_length=100, blank=True, default="")
    external_id = models.CharField(max_length=255, blank=True, default="")
    recorded_at = models.DateTimeField(null=True, blank=True)

    # Delivery.
    to_address = models.CharField(
        max_length=512,
        blank=True,
        default="",
        help_text="A specific contact point; blank: the channel's own.",
    )
    provider = models.CharField(max_length=100, blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    # A timestamp per transition.
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    decided_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    deferred_at = models.DateTimeField(null=True, blank=True)
    suppressed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # "Everything this recipient got in the last N hours": an index range scan.
            models.Index(fields=["recipient", "-created_at", "-id"], name="message_recipient_time"),
            # The governor's window count: cleared messages by recipient and time they cleared.
            models.Index(
                fields=["recipient", "accepted_at"],
                name="message_recipient_cleared",
                condition=Q(accepted_at__isnull=False),
            ),
            # The re-drive of deferred messages whose time came.
            models.Index(
                fields=["deliver_after", "priority"],
                name="message_deferred_due",
                condition=Q(status="deferred"),
            ),
            # The delivery sweeper: accepted messages whose (re)try is due.
            models.Index(
                fields=["next_attempt_at"], name="message_delivery_due", condition=Q(status="accepted")
            ),
            # The outbox in queue order: a delivery worker's claim reads its next batch off this index
            # (ORDER BY id LIMIT n) instead of sorting every due row or walking the whole history by id.
            models.Index(fields=["id"], name="message_delivery_queue", condition=Q(status="accepted")),
            models.Index(fields=["status", "-created_at"], name="message_status_time"),
            # GET messages/ pages by (-created_at, -id) with a cursor: an index range scan per page.
            models.Index(fields=["-created_at", "-id"], name="message_created"),
            # Provider receipts (webhooks) find their message by the provider's id.
            models.Index(
                fields=["provider_message_id"],
                name="message_provider_id",
                condition=~Q(provider_message_id=""),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(channel__in=Channel.values), name="message_channel_valid"),
            models.CheckConstraint(condition=Q(purpose__in=Purpose.values), name="message_purpose_valid"),
            models.CheckConstraint(condition=Q(status__in=MessageStatus.values), name="message_status_valid"),
            models.CheckConstraint(condition=Q(priority__lte=100), name="message_priority_range"),
            # Recording a send made elsewhere is idempotent on (source system, external id).
            models.UniqueConstraint(
                fields=["source_system", "external_id"],
                condition=Q(source="external"),
                name="message_external_unique",
            ),
        ]
        permissions = [
            ("send_message", "Can send messages through the pipeline"),
            ("receipt_message", "Can record delivery and engagement receipts"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.channel}/{self.purpose} to {self.recipient.external_id}: {self.status}"

    @property
    def summary(self) -> str:
        """A one-line view of the content for lists and the timeline."""
        c = self.content or {}
        head = c.get("subject") or c.get("title") or ""
        body = c.get("body") or ""
        text = f"{head} — {body}" if head and body else head or body
        return text if len(text) <= 120 else text[:119] + "…"


class MessageDecision(models.Model):
    """One decision of the governor on one message: the first, and every re-drive after it.

    The Message keeps only its latest rule and reason; these rows keep why it waited, each time, with the
    numbers behind the words (for a cap: used of limit in window, and when the next slot frees).
    """

    # Indexed by (message, at) below; a separate FK index would only slow writes.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="decisions", db_index=False)
    at = models.DateTimeField()
    outcome = models.CharField(max_length=12, choices=MessageStatus.choices)
    rule = models.CharField(max_length=200, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    used = models.PositiveIntegerField(null=True, blank=True, help_text="Messages counted by the rule.")
    limit = models.PositiveIntegerField(null=True, blank=True)
    window = models.DurationField(null=True, blank=True)
    next_slot = models.DateTimeField(null=True, blank=True, help_text="When it may go (deferred).")

    class Meta:
        ordering = ["message", "at", "id"]
        indexes = [models.Index(fields=["message", "at"], name="decision_message_time")]

    def __str__(self) -> str:
        return f"{self.outcome} at {self.at:%Y-%m-%d %H:%M} ({self.rule or 'no rule'})"


class IdempotencyKey(models.Model):
    """A stored first response for an `Idempotency-Key`, honoured for 24 h (Stripe semantics).

    The unique (scope, key) row is inserted first inside the request's transaction, so a concurrent
    repeat blocks on it and then reads the stored response instead of acting twice.
    """

    scope = models.CharField(max_length=100)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotency_unique_key")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"


class SettingsVersion(models.Model):
    """One row (pk 1): the version of the team's sending settings (channel policies, cap rules, quiet
    hours, pauses, the global holdout). Every edit of those tables gives it a new, never repeated value in
    the same transaction (signals, and PostgreSQL triggers for bulk and raw SQL); each process compares it
    with the version of its in-memory snapshot once per request (orchestrator.snapshot)."""

    version = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="settingsversion_one_row")]

    def __str__(self) -> str:
        return f"settings version {self.version}"


class SegmentMatch(models.TextChoices):
    ALL = "all", "All conditions"
    ANY = "any", "Any condition"


class Segment(models.Model):
    """A saved, named audience: conditions on recipients (see orchestrator.segments), evaluated in the
    database whenever it is counted, previewed or sent to."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    match = models.CharField(max_length=3, choices=SegmentMatch.choices, default=SegmentMatch.ALL)
    conditions = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(match__in=SegmentMatch.values), name="segment_match_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class Erasure(models.Model):
    """One recipient erased (the right to erasure): when, by whom, and how many rows were scrubbed.

    It names the person only by the anonymous token their row now carries, never by who they were; its
    history (django-simple-history) is the audit entry."""

    token = models.CharField(max_length=64, unique=True, help_text="The erased recipient's new external id.")
    recipient = models.OneToOneField(
        Recipient, null=True, blank=True, on_delete=models.SET_NULL, related_name="erasure"
    )
    erased_at = models.DateTimeField()
    erased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    via = models.CharField(max_length=120, blank=True, default="", help_text="API token, admin or command.")
    counts = models.JSONField(default=dict, blank=True, help_text="Rows scrubbed or removed, per table.")
    history = audited()

    class Meta:
        ordering = ["-erased_at", "-id"]

    def __str__(self) -> str:
        return f"{self.token} erased at {self.erased_at:%Y-%m-%d %H:%M}"


# ---- authority: who may act on which channels, and the tokens services call with -----------------


def validate_channel_list(value) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Expected a list of channels.", code="invalid")
    unknown = sorted(set(value) - set(Channel.values))
    if unknown:
        raise ValidationError(
            f"Unknown channel(s): {', '.join(unknown)}; expected any of {', '.join(Channel.values)}.",
            code="invalid_channel",
        )


class ChannelOwnership(models.Model):
    """Binds a person (a channel owner) to the channels they own: their drafts may send only there."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="channel_ownership"
    )
    channels = models.JSONField(default=list, validators=[validate_channel_list])
    history = audited()

    class Meta:
        verbose_name = "channel binding"
        verbose_name_plural = "channel bindings"
        permissions = [("act_on_all_channels", "Can act on every channel (not bound to owned channels)")]

    def __str__(self) -> str:
        return f"{self.user}: {', '.join(self.channels) or 'no channel'}"


class Scope(models.TextChoices):
    """What a service token may do; each scope maps to the permissions it needs (orchestrator.authority)."""

    SEND = "send", "send: send messages and record external sends"
    EVENTS = "events", "events: post product events"
    RECEIPTS = "receipts", "receipts: post delivery and engagement receipts"
    RECIPIENTS_READ = "recipients:read", "recipients:read: read recipients, history and timeline"
    RECIPIENTS_WRITE = "recipients:write", "recipients:write: create and update recipients"
    RECIPIENTS_ERASE = "recipients:erase", "recipients:erase: erase a recipient's personal data"
    MESSAGES_READ = "messages:read", "messages:read: list messages across recipients"
    INBOX = "inbox", "inbox: fetch a recipient's in-app inbox"
    JOURNEYS_READ = "journeys:read", "journeys:read: read journeys and their reports"
    JOURNEYS_WRITE = "journeys:write", "journeys:write: create, edit and move journeys, enroll"
    GOVERNOR_READ = "governor:read", "governor:read: read caps, quiet hours, pauses; dry-run checks"
    GOVERNOR_WRITE = "governor:write", "governor:write: edit caps, quiet hours and pauses"
    SEGMENTS_READ = "segments:read", "segments:read: read segments and preview their audience"
    SEGMENTS_WRITE = "segments:write", "segments:write: create, edit and delete segments"
    TEMPLATES_READ = "templates:read", "templates:read: read templates and preview them"
    TEMPLATES_WRITE = "templates:write", "templates:write: create and edit templates"
    CAMPAIGNS_READ = "campaigns:read", "campaigns:read: read campaigns and their progress"
    CAMPAIGNS_WRITE = "campaigns:write", "campaigns:write: create, edit, test and move campaigns"


TOKEN_PREFIX = "orch_"


def token_hash(raw: str) -> str:
    """Tokens are 32 random bytes: a SHA-256 digest is a safe, indexable way to store and find them."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ServiceToken(models.Model):
    """A scoped API key for a service. Only its hash is stored; the key is shown once, at creation.

    It acts as `user` (the service's account): what it may do is its scopes AND that account's roles.
    """

    name = models.CharField(max_length=100, unique=True, help_text="Which service uses it, e.g. checkout.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="service_tokens",
        help_text="The account it acts as; its roles bound what the scopes allow.",
    )
    scopes = models.JSONField(default=list, blank=True)
    prefix = models.CharField(max_length=16, editable=False, help_text="The key's first characters.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    history = audited(excluded_fields=["key_hash", "last_used_at"])

    class Meta:
        ordering = ["name"]
        verbose_name = "service token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def key_issue(self) -> str:
        """Draw a new key, keep its hash and prefix, and return it (the only time it exists in clear)."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.key_hash = token_hash(raw)
        self.prefix = raw[: len(TOKEN_PREFIX) + 6]
        return raw


def _auth_history_register() -> None:
    """Roles are Django groups: changes to a group's permissions and to who is in it are audited."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    if not hasattr(Group, "history"):
        history_register(Group, app="orchestrator", bases=[AuditedHistory], m2m_fields=["permissions"])
    if not hasattr(user_model, "history"):
        history_register(
            user_model,
            app="orchestrator",
            bases=[AuditedHistory],
            m2m_fields=["groups", "user_permissions"],
            excluded_fields=["password", "last_login"],
        )


_auth_history_register()


class WorkHeartbeat(models.Model):
    """When the due-work pass last ran (one row per pass name), and what failed in it: the admin's health
    banner and readiness read it (`orchestrator.work` writes it at the end of every pass)."""

    name = models.CharField(max_length=50, primary_key=True)
    last_run_at = models.DateTimeField()
    last_ok_at = models.DateTimeField(null=True, blank=True, help_text="The last pass with no failure.")
    errors = models.JSONField(default=dict, blank=True, help_text="Failures of the last pass, by function.")

    class Meta:
        verbose_name = "due-work heartbeat"

    def __str__(self) -> str:
        return f"{self.name} at {self.last_run_at:%Y-%m-%d %H:%M:%S}"
