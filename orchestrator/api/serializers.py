"""Serializers for the conversation API (CONTRACT.md)."""

from __future__ import annotations

from rest_framework import serializers

from .. import limits
from ..models import Channel, ContactPoint, Event, Message, MessageDecision, Preference, Recipient
from .fields import BoundedDateTimeField, DurationISOField, ExternalIdField, JSONObjectField


class MessageDecisionSerializer(serializers.ModelSerializer):
    """One governor decision on a message, with the numbers behind its reason."""

    window = DurationISOField(read_only=True, allow_null=True)

    class Meta:
        model = MessageDecision
        fields = ["at", "outcome", "rule", "reason", "used", "limit", "window", "next_slot"]


class ContactPointSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContactPoint
        fields = [
            "channel",
            "address",
            "opted_in",
            "undeliverable_at",
            "undeliverable_reason",
            "soft_bounces",
        ]
        read_only_fields = ["undeliverable_at", "undeliverable_reason", "soft_bounces"]


class RecipientWriteSerializer(serializers.Serializer):
    """Shape-checks an upsert/patch; the service validates values (time zone, email, phone)."""

    external_id = ExternalIdField(required=False)
    timezone = serializers.CharField(max_length=64, required=False)
    locale = serializers.CharField(max_length=35, required=False, allow_blank=True)
    attributes = JSONObjectField(required=False, help_text="A JSON object of at most 32 KB.")
    email = serializers.CharField(max_length=254, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=32, required=False, allow_blank=True)
    push_tokens = serializers.ListField(
        child=serializers.CharField(max_length=512),
        required=False,
        max_length=limits.MAX_PUSH_TOKENS,
        help_text=f"At most {limits.MAX_PUSH_TOKENS} tokens of at most 512 characters.",
    )
    in_app = serializers.BooleanField(required=False)
    preferences = serializers.JSONField(required=False)


class RecipientSerializer(serializers.ModelSerializer):
    email = serializers.SerializerMethodField()
    phone = serializers.SerializerMethodField()
    push_tokens = serializers.SerializerMethodField()
    in_app = serializers.SerializerMethodField()
    contact_points = ContactPointSerializer(many=True, read_only=True)
    preferences = serializers.SerializerMethodField()

    class Meta:
        model = Recipient
        fields = [
            "external_id",
            "timezone",
            "locale",
            "attributes",
            "email",
            "phone",
            "push_tokens",
            "in_app",
            "contact_points",
            "preferences",
            "last_seen_at",
            "created_at",
            "updated_at",
        ]

    def _addresses(self, obj: Recipient, channel: str) -> list[str]:
        return [cp.address for cp in obj.contact_points.all() if cp.channel == channel]

    def get_email(self, obj: Recipient) -> str | None:
        return next(iter(self._addresses(obj, Channel.EMAIL)), None)

    def get_phone(self, obj: Recipient) -> str | None:
        return next(iter(self._addresses(obj, Channel.SMS)), None)

    def get_push_tokens(self, obj: Recipient) -> list[str]:
        return self._addresses(obj, Channel.PUSH)

    def get_in_app(self, obj: Recipient) -> bool:
        return bool(self._addresses(obj, Channel.IN_APP))

    def get_preferences(self, obj: Recipient) -> dict[str, dict[str, bool]]:
        prefs: dict[str, dict[str, bool]] = {}
        for p in obj.preferences.all():
            prefs.setdefault(p.channel, {})[p.purpose] = p.opted_in
        return prefs


class MessageSerializer(serializers.ModelSerializer):
    recipient = serializers.SlugRelatedField(slug_field="external_id", read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "recipient",
            "channel",
            "requested_channel",
            "channel_reason",
            "purpose",
            "priority",
            "content",
            "status",
            "rule",
            "reason",
            "deliver_after",
            "expires_at",
            "warnings",
            "source",
            "source_ref",
            "source_system",
            "external_id",
            "recorded_at",
            "to_address",
            "provider",
            "provider_message_id",
            "attempts",
            "last_error",
            "created_at",
            "decided_at",
            "accepted_at",
            "deferred_at",
            "suppressed_at",
            "sent_at",
            "delivered_at",
            "opened_at",
            "clicked_at",
            "failed_at",
            "expired_at",
        ]


class EventSerializer(serializers.ModelSerializer):
    recipient = serializers.SlugRelatedField(slug_field="external_id", read_only=True)

    class Meta:
        model = Event
        fields = ["id", "recipient", "name", "properties", "occurred_at", "received_at"]


class EventWriteSerializer(serializers.Serializer):
    recipient = serializers.CharField(max_length=200)
    name = serializers.CharField(max_length=200)
    properties = JSONObjectField(required=False, help_text="A JSON object of at most 32 KB.")
    occurred_at = BoundedDateTimeField(required=False)
    create_recipient = serializers.BooleanField(required=False, default=False)
    timezone = serializers.CharField(max_length=64, required=False, help_text="Used with create_recipient.")


class TimelineEntrySerializer(serializers.Serializer):
    kind = serializers.CharField()
    at = serializers.DateTimeField()
    message = MessageSerializer(allow_null=True)
    event = EventSerializer(allow_null=True)


class PreferenceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Preference
        fields = ["channel", "purpose", "opted_in"]
