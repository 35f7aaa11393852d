"""One error shape for the API, whatever DEBUG says: validation errors as {field: [messages]}, everything
else as {code, detail}. A lost database answers 503 with Retry-After (the next request reconnects); any
other unexpected error answers 500 with a request id that is in the log beside the traceback."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..authority import Denied
from .request_id import request_id_current

logger = logging.getLogger("orchestrator.api")

# Seconds a client should wait before retrying after a 503 (the database reconnects on the next request).
RETRY_AFTER_SECONDS = 2


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def django_validation_error_to_drf(exc: DjangoValidationError) -> exceptions.ValidationError:
    if hasattr(exc, "error_dict"):
        return exceptions.ValidationError(exc.message_dict)
    return exceptions.ValidationError({"non_field_errors": exc.messages})


def unexpected_error_body(exc: BaseException, request_path: str = "") -> tuple[dict, int, dict]:
    """(body, status, headers) for an exception nothing else handled; logs it with the request id."""
    rid = request_id_current()
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable (request_id=%s) on %s: %s", rid, request_path, exc)
        body = {
            "code": "database_unavailable",
            "detail": "The database connection was lost. Retry shortly, with the same Idempotency-Key "
            "so that a request that did commit is not repeated.",
            "request_id": rid,
        }
        return body, status.HTTP_503_SERVICE_UNAVAILABLE, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    logger.error("unexpected error (request_id=%s) on %s", rid, request_path, exc_info=exc)
    body = {
        "code": "server_error",
        "detail": f"An unexpected error happened; it is logged with request id {rid}.",
        "request_id": rid,
    }
    return body, status.HTTP_500_INTERNAL_SERVER_ERROR, {}


def exception_handler(exc, context):
    if isinstance(exc, Denied):
        # 403 naming what is missing (a scope, a permission and its roles, a channel, a second person).
        return Response(
            {"code": exc.code, "detail": exc.detail, **exc.extra}, status=status.HTTP_403_FORBIDDEN
        )
    if isinstance(exc, DjangoValidationError):
        exc = django_validation_error_to_drf(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)
    if response is None:
        request = context.get("request")
        # A broken connection is replaced by Django's end-of-request check (CONN_HEALTH_CHECKS).
        body, code, headers = unexpected_error_body(exc, getattr(request, "path", ""))
        return Response(body, status=code, headers=headers)
    if not isinstance(exc, exceptions.ValidationError) and isinstance(response.data, dict):
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else None
        code = codes if isinstance(codes, str) else getattr(exc, "default_code", "error")
        response.data = {"code": code, "detail": response.data.get("detail", str(exc))}
    return response


def error_response(code: str, detail: str, http_status: int = 400, **extra) -> Response:
    return Response({"code": code, "detail": detail, **extra}, status=http_status)


def json_error(code: str, detail: str, http_status: int, **extra) -> JsonResponse:
    """The same body as error_response, outside DRF (middleware, URL fallbacks)."""
    return JsonResponse({"code": code, "detail": detail, **extra}, status=http_status)


@csrf_exempt  # a JSON 404, never Django's CSRF page, whatever the method and cookies
def api_not_found(request, *args, **kwargs):
    """Every /api/ path no route matched: a JSON 404 (a GET missing its trailing slash is redirected)."""
    from django.http import HttpResponsePermanentRedirect
    from django.urls import Resolver404, resolve

    path = request.path_info
    if not path.endswith("/"):
        try:
            match = resolve(path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            if request.method in ("GET", "HEAD"):
                query = request.META.get("QUERY_STRING", "")
                return HttpResponsePermanentRedirect(request.path + "/" + (f"?{query}" if query else ""))
            return json_error("not_found", f"No such API path; did you mean {request.path}/ ?", 404)
    return json_error("not_found", f"No such API path: {request.path[:200]}", 404)
