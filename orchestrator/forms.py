"""Admin form fields with the API's conventions: durations are ISO 8601 in and out (P1D, PT4H)."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from . import limits


class ISODurationFormField(forms.DurationField):
    """Shows `PT4H`, reads ISO 8601 (or `04:00:00`), refuses what is not positive or longer than P365D."""

    def __init__(self, **kwargs):
        kwargs["help_text"] = " ".join(filter(None, [kwargs.get("help_text"), limits.DURATION_HELP]))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, limits.timedelta):
            return limits.duration_iso(value)
        return value

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return limits.duration_parse(value)
        except limits.LimitError as exc:
            raise ValidationError(str(exc), code="invalid") from exc


# For ModelAdmin.formfield_overrides: {models.DurationField: ISO_DURATION}.
ISO_DURATION = {"form_class": ISODurationFormField}
