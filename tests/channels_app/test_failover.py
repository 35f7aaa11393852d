"""Failover across several providers per channel, per-provider timeouts, attempt rows per provider,
and the circuit breaker opening and closing — against real HTTP servers on loopback."""

from datetime import timedelta

import pytest
from django.utils import timezone

from channels_app.backends import SendResult
from channels_app.delivery import message_deliver, messages_deliver
from channels_app.models import CircuitState, DeliveryAttempt, ProviderCircuit
from channels_app.providers import circuit_allows, circuit_record, providers_for_channel
from orchestrator.models import Channel

from .factories import AcceptedMessageFactory
from .servers import http_server

pytestmark = pytest.mark.django_db

TWILIO = "channels_app.backends.sms.TwilioSmsBackend"


def two_providers(settings, server, first="broken", second="ok", timeout=None, failures=5):
    settings.CHANNELS = {
        **settings.CHANNELS,
        "SMS_HTTP": {**settings.CHANNELS["SMS_HTTP"], "ACCOUNT_SID": "AC1", "AUTH_TOKEN": "t", "FROM": "+1"},
        "BACKENDS": {
            **settings.CHANNELS["BACKENDS"],
            "sms": [
                {
                    "BACKEND": TWILIO,
                    "NAME": "sms-a",
                    "TIMEOUT": timeout,
                    "OPTIONS": {"base_url": f"{server.url}/{first}"},
                },
                {"BACKEND": TWILIO, "NAME": "sms-b", "OPTIONS": {"base_url": f"{server.url}/{second}"}},
            ],
        },
        "CIRCUIT": {
            "FAILURES": failures,
            "COOLDOWN": timedelta(seconds=60),
            "FAILOVER_BUDGET": timedelta(seconds=30),
        },
        "RETRY_MAX_ATTEMPTS": 3,
    }


def sms_message():
    return AcceptedMessageFactory(channel=Channel.SMS)


def calls(server, mode):
    return [r for r in server.requests if r["path"].startswith(f"/{mode}/")]


def test_the_first_provider_down_the_second_delivers_each_message_exactly_once(settings):
    with http_server() as server:
        two_providers(settings, server)
        messages = [sms_message() for _ in range(4)]
        assert messages_deliver(message_ids=[m.pk for m in messages]) == 4
    for m in messages:
        m.refresh_from_db()
        assert (m.status, m.provider) == ("sent", "sms-b")
        rows = list(m.delivery_attempts.order_by("number").values_list("number", "provider", "outcome"))
        assert rows == [(1, "sms-a", "transient"), (2, "sms-b", "success")]
    delivered = [r["headers"]["i-twilio-idempotency-token"] for r in calls(server, "ok")]
    assert sorted(delivered) == sorted(f"orchestrator-message-{m.pk}" for m in messages)  # each once
    assert len(calls(server, "broken")) == 4


def test_a_provider_that_times_out_fails_over_within_its_own_timeout(settings):
    with http_server() as server:
        two_providers(settings, server, first="slow", timeout=0.2)
        m = sms_message()
        message_deliver(message_id=m.pk)
    m.refresh_from_db()
    first = DeliveryAttempt.objects.get(message=m, number=1)
    assert m.status == "sent" and m.provider == "sms-b"
    assert first.outcome == "transient" and "no answer within 0.2 s" in first.response


def test_a_permanent_refusal_does_not_fail_over(settings):
    with http_server() as server:
        two_providers(settings, server, first="bad")
        m = sms_message()
        message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert m.status == "failed" and m.provider == "sms-a" and calls(server, "ok") == []


def test_every_provider_down_retries_later_with_each_answer_on_its_own_row(settings):
    with http_server() as server:
        two_providers(settings, server, second="busy")
        m = sms_message()
        message_deliver(message_id=m.pk)
    m.refresh_from_db()
    rows = list(m.delivery_attempts.order_by("number").values_list("provider", "outcome", "response"))
    assert [r[:2] for r in rows] == [("sms-a", "transient"), ("sms-b", "transient")]
    assert "HTTP 500" in rows[0][2] and "HTTP 429" in rows[1][2]
    assert m.status == "accepted" and m.attempts == 1 and m.next_attempt_at is not None
    assert m.delivery_attempts.get(number=2).retry_at == m.next_attempt_at


def test_the_circuit_opens_after_repeated_failures_and_the_provider_is_skipped(settings):
    with http_server() as server:
        two_providers(settings, server, failures=3)
        messages = [sms_message() for _ in range(5)]
        messages_deliver(message_ids=[m.pk for m in messages])
    circuit = ProviderCircuit.objects.get(provider="sms-a")
    assert circuit.state == CircuitState.OPEN and circuit.failures == 3 and "HTTP 500" in circuit.last_error
    assert len(calls(server, "broken")) == 3  # the 4th and 5th skipped the open circuit
    assert len(calls(server, "ok")) == 5
    last = messages[-1]
    [row] = last.delivery_attempts.all()
    assert (row.provider, row.outcome) == ("sms-b", "success") and "circuit open" in row.response


def test_the_circuit_half_opens_after_the_cooldown_and_closes_on_success():
    now = timezone.now()
    for _ in range(5):
        circuit_record(provider="p", result=SendResult.transient("HTTP 503"), now=now)
    assert circuit_allows(provider="p", now=now)[0] is False
    later = now + timedelta(seconds=61)
    assert circuit_allows(provider="p", now=later) == (True, "trial call after the cooldown")
    assert circuit_allows(provider="p", now=later)[0] is False  # one trial at a time
    circuit_record(provider="p", result=SendResult.success("x"), now=later)
    circuit = ProviderCircuit.objects.get(provider="p")
    assert (circuit.state, circuit.failures, circuit.retry_at) == (CircuitState.CLOSED, 0, None)
    assert circuit_allows(provider="p", now=later)[0] is True


def test_a_failed_trial_opens_the_circuit_again():
    now = timezone.now()
    for _ in range(5):
        circuit_record(provider="p", result=SendResult.transient("HTTP 503"), now=now)
    later = now + timedelta(seconds=61)
    assert circuit_allows(provider="p", now=later)[0] is True
    circuit_record(provider="p", result=SendResult.transient("HTTP 503"), now=later)
    circuit = ProviderCircuit.objects.get(provider="p")
    assert circuit.state == CircuitState.OPEN and circuit.retry_at == later + timedelta(seconds=60)


def test_a_healthy_provider_writes_no_circuit_row():
    circuit_record(provider="fine", result=SendResult.success("x"), now=timezone.now())
    assert not ProviderCircuit.objects.exists()


def test_single_backend_settings_still_work_and_names_are_unique(settings):
    settings.CHANNELS = {
        **settings.CHANNELS,
        "BACKENDS": {
            **settings.CHANNELS["BACKENDS"],
            "email": ["channels_app.backends.email.DjangoEmailBackend"] * 2,
        },
    }
    assert [p.name for p in providers_for_channel(channel="email")] == ["email:locmem", "email:locmem#2"]
    assert [p.name for p in providers_for_channel(channel="push")] == ["push:locmem"]


def test_the_admin_shows_circuits_and_closes_one(admin_client):
    now = timezone.now()
    for _ in range(5):
        circuit_record(provider="sms-a", result=SendResult.transient("HTTP 503 down"), now=now)
    page = admin_client.get("/admin/channels_app/providercircuit/")
    assert page.status_code == 200 and "sms-a" in page.content.decode() and "open" in page.content.decode()
    circuit = ProviderCircuit.objects.get()
    admin_client.post(
        "/admin/channels_app/providercircuit/", {"action": "close_circuits", "_selected_action": [circuit.pk]}
    )
    circuit.refresh_from_db()
    assert circuit.state == CircuitState.CLOSED


def test_the_last_provider_is_called_even_with_its_circuit_open(settings):
    now = timezone.now()
    for _ in range(5):
        circuit_record(provider="sms-a", result=SendResult.transient("HTTP 503"), now=now)
        circuit_record(provider="sms-b", result=SendResult.transient("HTTP 503"), now=now)
    with http_server() as server:
        two_providers(settings, server, first="broken", second="ok")
        m = sms_message()
        message_deliver(message_id=m.pk)
    m.refresh_from_db()
    assert (m.status, m.provider) == ("sent", "sms-b") and calls(server, "broken") == []
    assert ProviderCircuit.objects.get(provider="sms-b").state == CircuitState.CLOSED  # it answered
