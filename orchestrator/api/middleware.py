"""Guards in front of every view: API errors are JSON whatever DEBUG says, oversized bodies answer 413
before anything reads them, NUL characters in a path or query answer 400, and a lost database answers
503 with Retry-After on every page (never a 500)."""

from __future__ import annotations

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

from .errors import RETRY_AFTER_SECONDS, json_error, unexpected_error_body

API_PREFIX = "/api/"


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class ApiGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(API_PREFIX):
            refusal = self._refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)

    def _refusal(self, request):
        # DRF parses JSON straight from the stream, past Django's DATA_UPLOAD_MAX_MEMORY_SIZE check.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and _content_length(request) > limit:
            return json_error(
                "request_too_large",
                f"The body is {_content_length(request)} bytes; at most {limit} bytes.",
                413,
            )
        if "\x00" in request.path:
            return json_error("invalid_path", "NUL characters are not allowed in a path.", 400)
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in v for v in values):
                # {field: [messages]}, as every bad input is answered.
                field = name.replace("\x00", "") or "query"
                return JsonResponse({field: ["NUL characters (\\u0000) are not allowed."]}, status=400)
        return None

    def process_exception(self, request, exception):
        api = request.path.startswith(API_PREFIX)
        if isinstance(exception, OperationalError | InterfaceError):
            body, status, headers = unexpected_error_body(exception, request.path)
            if api:
                response = json_error(body["code"], body["detail"], status, request_id=body["request_id"])
            else:
                response = HttpResponse(
                    "The database is unavailable for a moment; reload the page shortly.\n",
                    status=status,
                    content_type="text/plain; charset=utf-8",
                )
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        if api:
            body, status, _ = unexpected_error_body(exception, request.path)
            return json_error(body["code"], body["detail"], status, request_id=body["request_id"])
        return None
