"""GET recipients/ and GET messages/: filtered lists a service can page through, however long.

Both page with a keyset cursor on (-created_at, -id), each list's own index: a page is one index range
scan whatever its depth (no OFFSET), rows written while a client pages never shift what it sees, and ties
on created_at (a bulk import writes thousands in one instant) are broken by id, so no row is skipped or
repeated. Filters are django-filter FilterSets; a bad value is a 400 naming the parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from datetime import datetime

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.utils.urls import remove_query_param, replace_query_param

from .. import limits
from ..models import Channel, Message, MessageStatus, Purpose, Recipient, Source
from .filters import MessageFilter

PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_ATTRIBUTE_FILTERS = 10
ATTRIBUTE_KEY_MAX = 200
INT_RE = re.compile(r"-?[0-9]{1,15}")
FLOAT_RE = re.compile(r"-?[0-9]{1,15}\.[0-9]{1,15}")


class KeysetCursorPagination(CursorPagination):
    """DRF's cursor pagination, keyed on the full (-created_at, -id) position instead of created_at and an
    offset: exact under ties, index-only at any depth. `page_size` 1-1000 (default 100)."""

    ordering = ("-created_at", "-id")
    page_size = PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    invalid_cursor_message = "Invalid cursor: use the next or previous link of a page as it is."

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({"page_size": [f"Expected a whole number from 1 to {self.max_page_size}."]})
        return int(raw)

    def decode_cursor(self, request) -> tuple[datetime, int, bool] | None:
        raw = request.query_params.get(self.cursor_query_param)
        if raw is None:
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(raw.encode("ascii")).decode())
            at = datetime.fromisoformat(payload["t"])
            pk = payload["i"]
            reverse = payload.get("r", False)
            if at.tzinfo is None or not isinstance(pk, int) or not isinstance(reverse, bool):
                raise ValueError("malformed")
            if not 0 < pk < 2**63 or not limits.DATETIME_MIN <= at <= limits.DATETIME_MAX:
                raise ValueError("out of range")
        except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error, AttributeError):
            raise ValidationError({self.cursor_query_param: [self.invalid_cursor_message]}) from None
        return at, pk, reverse

    @staticmethod
    def encode_position(item, *, reverse: bool) -> str:
        payload = {"t": item.created_at.isoformat(), "i": item.pk, "r": reverse}
        return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list:
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.cursor = cursor = self.decode_cursor(request)
        if cursor is None:
            rows = list(queryset.order_by("-created_at", "-id")[: self.page_size + 1])
            self.page, more = rows[: self.page_size], len(rows) > self.page_size
            self.has_next, self.has_previous = more, False
        else:
            at, pk, reverse = cursor
            if reverse:
                qs = queryset.filter(created_at__gte=at).exclude(created_at=at, id__lte=pk)
                rows = list(qs.order_by("created_at", "id")[: self.page_size + 1])
                self.page = list(reversed(rows[: self.page_size]))
                self.has_next, self.has_previous = True, len(rows) > self.page_size
            else:
                qs = queryset.filter(created_at__lte=at).exclude(created_at=at, id__gte=pk)
                rows = list(qs.order_by("-created_at", "-id")[: self.page_size + 1])
                self.page = rows[: self.page_size]
                self.has_next, self.has_previous = len(rows) > self.page_size, True
        if not self.page:
            # An empty page after a cursor: nothing further that way; the way back is the cursor itself.
            self.has_next = self.has_previous = False
        return self.page

    def _link(self, cursor: str) -> str:
        return replace_query_param(self.base_url, self.cursor_query_param, cursor)

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        return self._link(self.encode_position(self.page[-1], reverse=False))

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        if not self.page:
            return remove_query_param(self.base_url, self.cursor_query_param)
        return self._link(self.encode_position(self.page[0], reverse=True))

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "An opaque cursor: the next or previous link of a page.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per page, 1-{MAX_PAGE_SIZE} (default {PAGE_SIZE}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            },
        ]


class CursorListSchema(AutoSchema):
    """Names a cursor-paginated list's envelope apart from the page-numbered one of the same rows
    (`MessageCursorPage` for GET messages/, `PaginatedMessageList` for a recipient's history)."""

    def get_paginated_name(self, serializer_name: str) -> str:
        if isinstance(self._get_paginator(), KeysetCursorPagination):
            return f"{serializer_name}CursorPage"
        return super().get_paginated_name(serializer_name)


# --- recipients ----------------------------------------------------------------------------------------


def _attribute_value(text: str) -> list:
    """The JSON values `key:text` matches: the text itself, and a number or boolean it spells."""
    values: list = [text]
    if text in ("true", "false"):
        values.append(text == "true")
    elif INT_RE.fullmatch(text):
        values.append(int(text))
    elif FLOAT_RE.fullmatch(text) and math.isfinite(float(text)):
        values.append(float(text))
    return values


class AttributeConditionsField(forms.Field):
    """`attribute=key:value`, repeatable (all must hold)."""

    widget = forms.MultipleHiddenInput

    def clean(self, value) -> list[tuple[str, list]]:
        items = [v for v in (value or []) if v != ""]
        if len(items) > MAX_ATTRIBUTE_FILTERS:
            raise forms.ValidationError(f"At most {MAX_ATTRIBUTE_FILTERS} attribute conditions.")
        conditions = []
        for item in items:
            key, sep, text = item.partition(":")
            if not sep or not key or len(key) > ATTRIBUTE_KEY_MAX:
                raise forms.ValidationError(
                    f"Expected key:value with a key of 1-{ATTRIBUTE_KEY_MAX} characters, e.g. plan:pro "
                    f"(got {item[:60]!r})."
                )
            conditions.append((key, _attribute_value(text)))
        return conditions


class AttributeFilter(django_filters.Filter):
    field_class = AttributeConditionsField

    def filter(self, qs: QuerySet, value: list[tuple[str, list]]) -> QuerySet:
        for key, values in value or []:
            q = Q()
            for v in values:
                q |= Q(attributes__contains={key: v})  # jsonb @>: the GIN index on attributes
            qs = qs.filter(q)
        return qs


class RecipientFilter(django_filters.FilterSet):
    attribute = AttributeFilter()
    timezone = django_filters.CharFilter(max_length=64)
    locale = django_filters.CharFilter(max_length=35)

    class Meta:
        model = Recipient
        fields = ["attribute", "timezone", "locale"]


RECIPIENT_LIST_PARAMETERS = [
    OpenApiParameter(
        "attribute",
        {
            "type": "array",
            "maxItems": MAX_ATTRIBUTE_FILTERS,
            "items": {"type": "string", "pattern": f"^[^:\\u0000]{{1,{ATTRIBUTE_KEY_MAX}}}:[^\\u0000]*$"},
        },
        style="form",
        explode=True,
        description="key:value, repeatable (all must hold); the value also matches the number or "
        "true/false it spells: attribute=plan:pro&attribute=seats:5.",
    ),
    OpenApiParameter("timezone", {"type": "string", "maxLength": 64}, description="An IANA name."),
    OpenApiParameter("locale", {"type": "string", "maxLength": 35}),
    OpenApiParameter("created_after", OpenApiTypes.DATETIME, description="ISO 8601 date-time, inclusive."),
    OpenApiParameter("created_before", OpenApiTypes.DATETIME, description="ISO 8601 date-time, exclusive."),
]


# --- messages ------------------------------------------------------------------------------------------


class MessageListFilter(MessageFilter):
    """The recipient history's filters, plus which recipient and which journey, across everyone."""

    source = django_filters.MultipleChoiceFilter(choices=Source.choices, distinct=False)
    recipient = django_filters.CharFilter(field_name="recipient__external_id", max_length=200)
    journey = django_filters.CharFilter(method="journey_filter", max_length=100)

    class Meta(MessageFilter.Meta):
        fields = [*MessageFilter.Meta.fields, "recipient", "journey"]

    def journey_filter(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        # A journey's sends carry "slug · step" (journeys.scheduler) in source_ref.
        return qs.filter(source=Source.JOURNEY, source_ref__startswith=f"{value} · ")


# Range parameters: (query name, column, lookup).
MESSAGE_RANGES = {
    "since": ("created_at", "gte"),
    "until": ("created_at", "lt"),
    "sent_after": ("sent_at", "gte"),
    "sent_before": ("sent_at", "lt"),
    "accepted_after": ("accepted_at", "gte"),
    "accepted_before": ("accepted_at", "lt"),
}
RECIPIENT_RANGES = {"created_after": ("created_at", "gte"), "created_before": ("created_at", "lt")}

MESSAGE_LIST_PARAMETERS = [
    OpenApiParameter("channel", str, many=True, enum=Channel.values),
    OpenApiParameter("status", str, many=True, enum=MessageStatus.values),
    OpenApiParameter("purpose", str, many=True, enum=Purpose.values),
    OpenApiParameter("source", str, many=True, enum=Source.values),
    OpenApiParameter("recipient", {"type": "string", "maxLength": 200}, description="An external id."),
    OpenApiParameter("journey", {"type": "string", "maxLength": 100}, description="A journey slug."),
    *(
        OpenApiParameter(
            name,
            OpenApiTypes.DATETIME,
            description=f"ISO 8601 date-time on {column}, {'inclusive' if op == 'gte' else 'exclusive'}.",
        )
        for name, (column, op) in MESSAGE_RANGES.items()
    ),
]


def list_filter(request, queryset: QuerySet, filterset_class, ranges: dict) -> QuerySet:
    """Apply the date ranges (clamped like every API date filter) and the FilterSet; 400 naming what is
    wrong."""
    from .views import query_datetimes

    bounds = query_datetimes(request, *ranges)
    for name, value in bounds.items():
        column, op = ranges[name]
        queryset = queryset.filter(**{f"{column}__{op}": value})
    params = request.query_params.copy()
    for name in (*ranges, "cursor", "page_size"):
        params.pop(name, None)
    filterset = filterset_class(params, queryset=queryset)
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    return filterset.qs


def messages_list_queryset() -> QuerySet:
    return Message.objects.select_related("recipient")
