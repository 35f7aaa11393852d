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
