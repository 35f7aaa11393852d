"""Serializer fields with the documented limits (orchestrator.limits): ISO 8601 durations in and out,
bounded date-times, URL-safe external ids, bounded JSON objects."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import limits


@extend_schema_field(
    {
        "type": "string",
        "format": "duration",
        "example": "PT4H",
        "description": limits.DURATION_HELP,
    }
)
class DurationISOField(serializers.Field):
    """ISO 8601 in and out (`PT4H`, `P1D`; `04:00:00` also read), positive and at most P365D."""

    default_error_messages = {"invalid": "{reason}"}

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", limits.DURATION_HELP)
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> timedelta:
        try:
            return limits.duration_parse(data)
        except limits.LimitError as exc:
            self.fail("invalid", reason=str(exc))

    def to_representation(self, value: timedelta) -> str:
        return limits.duration_iso(value)


class BoundedDateTimeField(serializers.DateTimeField):
    """A date-time between 2000 and 2100, optionally at most `ahead` after now."""

    def __init__(self, *, ahead: timedelta | None = None, **kwargs):
        self.ahead = ahead
        super().__init__(**kwargs)

    def to_internal_value(self, value):
        try:
            parsed = super().to_internal_value(value)
        except (OverflowError, ValueError) as exc:
            raise serializers.ValidationError(f"{value!r} is not a date-time the API supports.") from exc
        try:
            limits.datetime_check(parsed)
        except limits.LimitError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        if self.ahead is not None and parsed > timezone.now() + self.ahead:
            raise serializers.ValidationError(
                f"At most {limits.duration_iso(self.ahead)} ahead of now (the limit)."
            )
        return parsed


class ExternalIdField(serializers.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", limits.EXTERNAL_ID_MAX)
        kwargs.setdefault("help_text", limits.EXTERNAL_ID_HELP)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            limits.external_id_check(value)
        except limits.LimitError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return value


@extend_schema_field(OpenApiTypes.OBJECT)
class JSONObjectField(serializers.JSONField):
    """A JSON object of at most MAX_JSON_BYTES (event properties, recipient attributes)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            limits.json_object_check(value, what=self.field_name or "value")
        except limits.LimitError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return value
