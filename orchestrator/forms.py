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


class TagsInput(forms.TextInput):
    """A list of short strings as tags (Tagify, vendored under static/vendor/tagify); without JavaScript a
    plain comma-separated text box."""

    class Media:
        css = {"all": ["vendor/tagify/tagify.css"]}
        js = ["vendor/tagify/tagify.js", "orchestrator/tags.js"]

    def __init__(self, attrs=None):
        super().__init__({"class": "orch-tags vLargeTextField", **(attrs or {})})

    def format_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return super().format_value(value)


class TagsField(forms.Field):
    """A JSON list of strings edited as tags: reads "a, b" (or Tagify's JSON), keeps order, drops blanks
    and repeats."""

    widget = TagsInput

    def __init__(self, *, max_length: int = 200, **kwargs):
        self.max_length = max_length
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return []
        if isinstance(value, list | tuple):
            items = [str(v) for v in value]
        else:
            text = str(value).strip()
            items = None
            if text.startswith("["):
                import json

                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = None
                if isinstance(parsed, list):
                    items = [str(v.get("value", "")) if isinstance(v, dict) else str(v) for v in parsed]
            if items is None:
                items = text.replace("\n", ",").split(",")
        tags: list[str] = []
        for item in (i.strip() for i in items):
            if not item or item in tags:
                continue
            if len(item) > self.max_length:
                raise ValidationError(
                    f"“{item[:40]}…” is longer than {self.max_length} characters.", code="max_length"
                )
            tags.append(item)
        return tags

    def prepare_value(self, value):
        return value
