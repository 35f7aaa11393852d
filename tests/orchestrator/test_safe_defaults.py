"""Safe defaults and error answers: JSON 500 with a request id that is in the log, 503 with Retry-After on
a lost database, DEBUG off by default, no start on the development key, `check --deploy` clean with the
documented production settings, admin login throttling, the demo password generated."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from django.db import OperationalError

from orchestrator import services
from orchestrator.management.commands.seed_demo import demo_password

from .factories import ReachableRecipientFactory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# docs/deployment.md's production settings.
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "kX9v2Qm7Lr4tZ8pW1sN6yB3cF5hJ0dG2aE7uR9iO4lK8mT1qV6wY3xC5zS0pD2fH",
    "ALLOWED_HOSTS": "orchestrator.example.com",
    "HTTPS": "true",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "orchestrator.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_a_real_500_is_json_with_a_request_id_that_is_in_the_log(api, monkeypatch, caplog, settings, debug):
    settings.DEBUG = debug
    ReachableRecipientFactory(external_id="r1")

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "event_ingest", broken)
    with caplog.at_level(logging.ERROR, logger="orchestrator.api"):
        response = api.post("/api/v1/events/", {"recipient": "r1", "name": "x"}, format="json")
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "server_error" and body["request_id"] == response["X-Request-ID"]
    logged = [r for r in caplog.records if body["request_id"] in r.getMessage()]
    assert logged and logged[0].exc_info and "boom" in str(logged[0].exc_info[1])


@pytest.mark.django_db
def test_a_lost_database_answers_503_with_retry_after(api, monkeypatch):
    ReachableRecipientFactory(external_id="r1")

    def lost(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "event_ingest", lost)
    response = api.post("/api/v1/events/", {"recipient": "r1", "name": "x"}, format="json")
    assert response.status_code == 503 and response["Retry-After"].isdigit()
    assert response.json()["code"] == "database_unavailable"
    assert api.get("/api/v1/recipients/r1/").status_code == 200  # the next request works


def test_debug_is_off_unless_set_and_the_development_key_refuses_to_start():
    refused = manage("check", SECRET_KEY="dev-only-insecure-key-change-me-in-production")
    assert refused.returncode != 0 and "SECRET_KEY must be set" in refused.stderr
    assert manage("check").returncode != 0  # DEBUG off by default, no key: refused
    assert manage("check", DEBUG="true").returncode == 0  # make run's local setting
    shown = manage(
        "shell", "-c", "from django.conf import settings; print(settings.DEBUG)", SECRET_KEY="x" * 60
    )
    assert shown.stdout.strip().splitlines()[-1] == "False"


def test_check_deploy_is_clean_with_the_documented_production_settings():
    done = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(os.path.join(ROOT, "docs", "deployment.md")) as f:
        deployment = f.read()
    assert all(name in deployment for name in PRODUCTION_ENV)


@pytest.mark.django_db
def test_admin_logins_are_throttled(client, django_user_model):
    django_user_model.objects.create_superuser("boss", "boss@example.com", "right-password-123")
    for _ in range(4):
        failed = client.post("/admin/login/", {"username": "boss", "password": "wrong"})
        assert failed.status_code == 200  # the form again, with its error
    assert client.post("/admin/login/", {"username": "boss", "password": "wrong"}).status_code == 429
    locked = client.post("/admin/login/", {"username": "boss", "password": "right-password-123"})
    assert locked.status_code == 429  # even the right password waits out the cool-off
    assert "_auth_user_id" not in client.session


def test_the_demo_password_is_generated_and_kept(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    settings.VAR_DIR = tmp_path
    first = demo_password()
    assert first != "orchestrator" and len(first) >= 12
    assert demo_password() == first
    assert oct((tmp_path / "demo-admin-password").stat().st_mode)[-3:] == "600"
