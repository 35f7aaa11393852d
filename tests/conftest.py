"""Shared fixtures. The suite runs on real PostgreSQL (`make test` makes sure one answers)."""

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orchestrator.authority import MESSAGING_TEAM, SERVICE
from orchestrator.models import Scope, ServiceToken


def pytest_configure(config):
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        raise pytest.UsageError(
            f"The test suite runs on PostgreSQL, not {engine}: run `make test` or set DATABASE_URL."
        )


def user_with_roles(django_user_model, username: str, *roles: str, channels=None):
    """A user in the given roles (groups); `channels` binds a channel owner to channels."""
    from orchestrator.models import ChannelOwnership

    user = django_user_model.objects.create_user(username=username, password=f"{username}-pass")
    user.groups.add(*Group.objects.filter(name__in=roles))
    if channels is not None:
        ChannelOwnership.objects.create(user=user, channels=list(channels))
    return user


def token_client(user, scopes=None) -> APIClient:
    """A client calling with a scoped service token acting as `user` (all scopes unless given)."""
    token = ServiceToken(name=f"{user.username}-token", user=user, scopes=list(scopes or Scope.values))
    raw = token.key_issue()
    token.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.token = token
    return client


def personal_client(user) -> APIClient:
    """A client calling with the user's own DRF token (`manage.py drf_create_token`): the user's roles."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api_user(django_user_model):
    """The test service's account: the data plane (Service) and the messaging team's governance."""
    return user_with_roles(django_user_model, "service", SERVICE, MESSAGING_TEAM)


@pytest.fixture
def api(api_user) -> APIClient:
    """An API client authenticated with a service token holding every scope, as services call the API."""
    return token_client(api_user)


@pytest.fixture
def api_reviewer(django_user_model) -> APIClient:
    """A second messaging-team member: approves what `api` proposed (separation of duties)."""
    return personal_client(user_with_roles(django_user_model, "reviewer", MESSAGING_TEAM))


def pytest_collection_modifyitems(items):
    """Transactional tests restore the migrated data (default governor, channel policies, schedule).

    A transaction=True test is flushed afterwards; with serialized_rollback the data-migration rows come
    back for the next test, and the flush skips post_migrate, so no test meets half-recreated tables.
    """
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker and marker.kwargs.get("transaction") and not marker.kwargs.get("serialized_rollback"):
            item.add_marker(
                pytest.mark.django_db(*marker.args, **{**marker.kwargs, "serialized_rollback": True}),
                append=False,
            )


@pytest.fixture(autouse=True)
def _locmem_outboxes_clear():
    """The in-memory providers de-duplicate on the message id (as real ones do on the idempotency key);
    ids repeat across tests, so each test starts with empty outboxes."""
    from channels_app.backends import push, sms

    sms.outbox.clear()
    push.outbox.clear()


@pytest.fixture(autouse=True)
def _governor_policy_cache_clear():
    """Rules cached by one test (rolled back afterwards) must not leak into the next."""
    from governor.policy import policy_cache_clear

    policy_cache_clear()
    yield
    policy_cache_clear()
