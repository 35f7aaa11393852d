"""Shared fixtures. The suite runs on real PostgreSQL (`make test` makes sure one answers)."""

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def pytest_configure(config):
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        raise pytest.UsageError(
            f"The test suite runs on PostgreSQL, not {engine}: run `make test` or set DATABASE_URL."
        )


@pytest.fixture
def api_user(django_user_model):
    return django_user_model.objects.create_user(username="service", password="service-pass")


@pytest.fixture
def api(api_user) -> APIClient:
    """An API client authenticated with a token, as services call the API."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=api_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


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
