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

from django.db.models import OuterRef
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from ..authority import Denied, authorize, role_permissions_subquery
from ..db import is_postgres
from ..models import TOKEN_PREFIX, ServiceToken, token_hash

LAST_USED_EVERY = timedelta(minutes=1)  # write last_used_at at most this often per token


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
        tokens = ServiceToken.objects.select_related("user").filter(key_hash=token_hash(raw))
        if is_postgres():
            # The account's role permissions ride along (every call asks for them): one statement, not two.
            tokens = tokens.annotate(role_perms=role_permissions_subquery(OuterRef("user_id")))
        token = tokens.first()
        if token is None or token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Unknown or revoked service token.", code="invalid_token")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The token's account is disabled.", code="inactive_account")
        if getattr(token, "role_perms", None) is not None and not token.user.is_superuser:
            token.user._perm_cache = set(token.role_perms)  # what RoleBackend would read
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
