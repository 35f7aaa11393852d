"""API authentication and authorization: scoped service tokens, and the one permission class.

Every view says what each request needs as `required = {METHOD or action: (scope, permission)}` (or
`scope_read` / `scope_write` for model viewsets, whose permissions follow the model). A caller passes when

- a service token carries the scope (else 403 `missing_scope`, naming it), and
- the acting account (the token's, or the person's for a session or a personal DRF token) holds the
  permission through its roles (else 403 `missing_permission`, naming it and the roles that carry it).

Object-level checks (channels owned, separation of duties) happen in the services and views through
`orchestrator.authority.authorize`, so the admin and the API get the same answer.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connection
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from ..authority import Denied, authorize, role_permissions_subquery
from ..db import hot_cursor, is_postgres
from ..models import TOKEN_PREFIX, ServiceToken, token_hash

LAST_USED_EVERY = timedelta(minutes=1)  # write last_used_at at most this often per token


_KEY = "\x00key-hash\x00"  # stands for the key's hash in the statement compiled once


@lru_cache(maxsize=1)
def _token_statement() -> tuple[str, tuple, int, tuple, tuple, int]:
    """The token lookup (the token, its account, and the account's role permissions as an array) compiled
    by the ORM once per process: the compile cost more than the statement. Returns the SQL, its
    parameters (with _KEY where the hash goes), the key's position, the token's and the account's
    (attnames, column positions), and the permissions' column."""
    query = (
        ServiceToken.objects.select_related("user")
        .filter(key_hash=_KEY)
        .annotate(role_perms=role_permissions_subquery())
        .query
    )
    compiler = query.get_compiler(using=DEFAULT_DB_ALIAS)
    sql, params = compiler.as_sql()
    token_info = compiler.klass_info
    user_info = token_info["related_klass_infos"][0]

    def columns(info) -> tuple[list[str], list[tuple[int, Any]]]:
        """attnames, and each column's position with the field's from_db_value (JSON arrives as text)."""
        fields = [compiler.select[i][0].target for i in info["select_fields"]]
        return [f.attname for f in fields], [
            (i, getattr(f, "from_db_value", None)) for i, f in zip(info["select_fields"], fields, strict=True)
        ]

    perms_at = compiler.annotation_col_map["role_perms"]
    return sql, tuple(params), list(params).index(_KEY), columns(token_info), columns(user_info), perms_at


def _values(row, columns) -> list:
    return [row[i] if convert is None else convert(row[i], None, connection) for i, convert in columns]


def token_with_account(*, key_hash: str) -> ServiceToken | None:
    """The service token with this key hash, its account loaded, and the account's role permissions
    cached on it (what RoleBackend would read): one prepared statement (PostgreSQL)."""
    sql, params, at, (token_names, token_at), (user_names, user_at), perms_at = _token_statement()
    params = list(params)
    params[at] = key_hash
    with hot_cursor() as (cursor, prepare):
        cursor.execute(sql, params, **prepare)
        row = cursor.fetchone()
    if row is None:
        return None
    token = ServiceToken.from_db(DEFAULT_DB_ALIAS, token_names, _values(row, token_at))
    user = get_user_model().from_db(DEFAULT_DB_ALIAS, user_names, _values(row, user_at))
    if not user.is_superuser:
        user._perm_cache = set(row[perms_at] or ())
    ServiceToken.user.field.set_cached_value(token, user)
    return token


class ServiceTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer orch_...` (or `Token orch_...`): a scoped service token, found by its hash.

    Keys without the prefix are left to DRF's TokenAuthentication (a person's own token)."""

    keywords = ("bearer", "token")

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower().decode(errors="replace") not in self.keywords:
            return None
        try:
            raw = parts[1].decode()
        except UnicodeDecodeError:
            return None
        if not raw.startswith(TOKEN_PREFIX):
            return None
        if is_postgres():
            token = token_with_account(key_hash=token_hash(raw))
        else:
            token = ServiceToken.objects.select_related("user").filter(key_hash=token_hash(raw)).first()
        if token is None or token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Unknown or revoked service token.", code="invalid_token")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The token's account is disabled.", code="inactive_account")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
            ServiceToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


def scope_require(request, scope: str) -> None:
    """Raise 403 `missing_scope` when the request comes with a service token that lacks `scope`."""
    token = getattr(request, "auth", None)
    if isinstance(token, ServiceToken) and scope not in (token.scopes or []):
        held = ", ".join(token.scopes or []) or "none"
        raise Denied(
            "missing_scope",
            f"The service token {token.name!r} lacks the scope {scope!r} (it has: {held}).",
            scope=scope,
        )


# A requirement any authenticated caller meets (an index, a schema): no scope, no permission.
ANY_CALLER = ("", "")

MODEL_PERMS = {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "add", "PUT": "change"}
MODEL_PERMS |= {"PATCH": "change", "DELETE": "delete"}


def view_requirement(request, view) -> tuple[str, str] | None:
    """(scope, permission) the view declares for this request, or None when it declares nothing."""
    required = getattr(view, "required", None) or {}
    action = getattr(view, "action", None)
    if action and action in required:
        return required[action]
    if request.method in required:
        return required[request.method]
    if request.method == "HEAD" and "GET" in required:
        return required["GET"]
    scope_read, scope_write = getattr(view, "scope_read", None), getattr(view, "scope_write", None)
    queryset = getattr(view, "queryset", None)
    if scope_read and queryset is not None:
        opts = queryset.model._meta
        verb = MODEL_PERMS.get(request.method)
        if verb is None:
            return None
        scope = scope_read if verb == "view" else scope_write
        return scope, f"{opts.app_label}.{verb}_{opts.model_name}"
    return None


class Authorized(permissions.BasePermission):
    """Authenticated, with the scope (tokens) and the role permission the view declares for the request."""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            raise exceptions.NotAuthenticated()
        if request.method.lower() not in view.http_method_names or not hasattr(view, request.method.lower()):
            return True  # a method the view does not have: DRF answers 405, not a permission question
        requirement = view_requirement(request, view)
        if requirement is None:
            if request.method == "OPTIONS" or (
                request.user.is_superuser and not isinstance(request.auth, ServiceToken)
            ):
                return True
            raise Denied("undeclared", "This endpoint declares no permission; only a superuser may call it.")
        scope, perm = requirement
        if scope:
            scope_require(request, scope)
        if perm:
            authorize(request.user, perm)
        return True


class ServiceTokenScheme(OpenApiAuthenticationExtension):
    """The schema's description of service tokens (`Authorization: Bearer orch_...`)."""

    target_class = ServiceTokenAuthentication
    name = "serviceToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A scoped service token (orch_...), created in the admin; shown once.",
        }
