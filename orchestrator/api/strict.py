"""JSON types are strict in the API: a number is not a string, a string is not a number or a boolean.

DRF coerces (`0` → "0", "5" → 5, "yes" → True), which lets a malformed client pass unnoticed and makes
the served schema lie about what is accepted. `install()` (called once from the app config) makes the
three scalar fields refuse the other JSON types with their own "invalid" message."""

from __future__ import annotations

from rest_framework import fields

_installed = False


def _strict(field_class, accepts):
    coerce = field_class.to_internal_value

    def to_internal_value(self, data):
        if not accepts(data):
            self.fail("invalid")
        return coerce(self, data)

    field_class.to_internal_value = to_internal_value


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    _strict(fields.CharField, lambda v: isinstance(v, str))
    _strict(fields.IntegerField, lambda v: isinstance(v, int) and not isinstance(v, bool))
    _strict(fields.BooleanField, lambda v: isinstance(v, bool))
