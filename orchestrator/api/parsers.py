"""Request parsers that refuse, with a 400 naming the field, what would otherwise fail deep inside:
a body that is not a JSON object, a NUL character (PostgreSQL text cannot hold one), nesting deep enough
to exhaust the recursion limit."""

from __future__ import annotations

from django.http import QueryDict
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

from ..limits import json_body_problem


def _refuse_problems(data):
    problem = json_body_problem(dict(data.lists()) if isinstance(data, QueryDict) else data)
    if problem:
        field, reason = problem
        raise ValidationError({field: [reason]})
    return data


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc
        if not isinstance(data, dict):
            kind = "null" if data is None else type(data).__name__
            raise ValidationError({"non_field_errors": [f"Expected a JSON object, not {kind}."]})
        return _refuse_problems(data)


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        return _refuse_problems(super().parse(stream, media_type, parser_context))


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        result = super().parse(stream, media_type, parser_context)
        _refuse_problems(result.data)
        return result
