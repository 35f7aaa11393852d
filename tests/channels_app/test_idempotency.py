"""Idempotency-Key on POST messages/ and POST events/ (Stripe semantics)."""

import threading

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from channels_app.backends import sms
from orchestrator.models import Event, IdempotencyKey, Message
from tests.orchestrator.factories import ReachableRecipientFactory

BODY = {"recipient": "i1", "channel": "sms", "purpose": "transactional", "content": {"body": "Code 428193"}}


@pytest.fixture(autouse=True)
def _empty_outbox():
    sms.outbox.clear()


@pytest.mark.django_db
def test_a_replay_returns_the_first_response_and_sends_nothing_new(api, django_capture_on_commit_callbacks):
    ReachableRecipientFactory(external_id="i1")
    with django_capture_on_commit_callbacks(execute=True):
        first = api.post("/api/v1/messages/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        again = api.post("/api/v1/messages/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == 1 and len(sms.outbox) == 1


@pytest.mark.django_db
def test_the_same_key_with_a_different_body_is_409_and_writes_nothing(api):
    ReachableRecipientFactory(external_id="i1")
    assert api.post("/api/v1/messages/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-2").status_code == 201
    other = {**BODY, "content": {"body": "Code 999999"}}
    resp = api.post("/api/v1/messages/", other, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert resp.status_code == 409 and resp.json()["code"] == "idempotency_conflict"
    assert Message.objects.count() == 1


@pytest.mark.django_db
def test_a_refused_request_does_not_pin_the_key(api):
    ReachableRecipientFactory(external_id="i1")
    bad = {**BODY, "purpose": "promotional"}
    assert api.post("/api/v1/messages/", bad, format="json", HTTP_IDEMPOTENCY_KEY="k-3").status_code == 400
    assert not IdempotencyKey.objects.exists()
    assert api.post("/api/v1/messages/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-3").status_code == 201


@pytest.mark.django_db
def test_an_event_replay_records_one_event(api):
    ReachableRecipientFactory(external_id="i1")
    body = {"recipient": "i1", "name": "purchase", "properties": {"order": 7}}
    first = api.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="e-1")
    again = api.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="e-1")
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert Event.objects.count() == 1
    changed = api.post(
        "/api/v1/events/", {**body, "name": "refund"}, format="json", HTTP_IDEMPOTENCY_KEY="e-1"
    )
    assert changed.status_code == 409 and Event.objects.count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_repeats_of_one_key_create_exactly_one_message(django_user_model):
    ReachableRecipientFactory(external_id="i1")
    user = django_user_model.objects.create_user(username="svc", password="x")
    user.groups.add(Group.objects.get(name="Service"))  # the sending role
    token = Token.objects.create(user=user).key
    barrier = threading.Barrier(16)
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        try:
            barrier.wait(timeout=10)
            resp = client.post("/api/v1/messages/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="race-1")
            with lock:
                results.append((resp.status_code, resp.json()))
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=post) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 16
    assert {code for code, _ in results} == {201}
    assert len({body["id"] for _, body in results}) == 1
    assert Message.objects.count() == 1
    assert len(sms.outbox) == 1  # delivered once (tests run tasks inline on commit)


@pytest.mark.django_db
def test_a_key_is_honoured_for_24_hours_then_forgotten(api, django_capture_on_commit_callbacks):
    from datetime import timedelta

    ReachableRecipientFactory(external_id="i1")
    with django_capture_on_commit_callbacks(execute=True):
        first = api.post("/api/v1/messages/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-ttl")
    IdempotencyKey.objects.update(created_at=IdempotencyKey.objects.get().created_at - timedelta(hours=23))
    assert (
        api.post("/api/v1/messages/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-ttl").json()
        == first.json()
    )
    IdempotencyKey.objects.update(created_at=IdempotencyKey.objects.get().created_at - timedelta(hours=2))
    with django_capture_on_commit_callbacks(execute=True):
        later = api.post("/api/v1/messages/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-ttl")
    assert later.status_code == 201 and later.json()["id"] != first.json()["id"]
    assert Message.objects.count() == 2 and len(sms.outbox) == 2
