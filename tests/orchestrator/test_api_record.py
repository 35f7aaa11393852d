"""POST messages/record/: a send another system made, recorded into the one history (CONTRACT.md v1.1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from channels_app.models import DeliveryAttempt
from governor.defaults import DEFAULT_CAP_RULES
from orchestrator.models import Message, MessageStatus, Recipient, Source

from .factories import ReachableRecipientFactory, RecipientFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/messages/record/"
DAILY, PUSH_4H = DEFAULT_CAP_RULES[0]["name"], DEFAULT_CAP_RULES[1]["name"]
NEWSLETTER = {"subject": "Spring newsletter", "body": "What is new this spring."}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def record(api, headers=None, **body):
    payload = {
        "recipient": "r1",
        "channel": "email",
        "purpose": "engagement",
        "sent_at": iso(timezone.now() - timedelta(hours=1)),
        "source_system": "esp-newsletter",
        "external_id": "nl-0001",
        "content": NEWSLETTER,
        **body,
    }
    return api.post(URL, payload, format="json", headers=headers or {})


def test_a_recorded_send_is_sent_external_counted_from_its_sent_time_and_not_delivered(api):
    ReachableRecipientFactory(external_id="r1")
    sent_at = timezone.now() - timedelta(hours=3)
    resp = record(api, sent_at=iso(sent_at))
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["status"] == "sent" and body["source"] == "external"
    assert body["source_system"] == "esp-newsletter" and body["external_id"] == "nl-0001"
    assert body["recipient"] == "r1" and body["channel"] == "email" and body["purpose"] == "engagement"
    message = Message.objects.get(pk=body["id"])
    # Counted by every cap rule from when it was sent, never decided here.
    assert message.accepted_at == message.sent_at == message.created_at == sent_at
    assert message.decided_at is None and not message.decisions.exists()
    assert message.recorded_at is not None and message.recorded_at >= sent_at
    # Nothing is delivered: no provider call, no attempt, and the due-work pass leaves it alone.
    from orchestrator.work import due_work_run

    due_work_run(limit=100)
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert not DeliveryAttempt.objects.exists() and mail.outbox == []


def test_a_delivered_send_keeps_its_delivery_time(api):
    ReachableRecipientFactory(external_id="r1")
    sent_at = timezone.now() - timedelta(hours=2)
    resp = record(api, sent_at=iso(sent_at), delivered_at=iso(sent_at + timedelta(minutes=1)))
    assert resp.status_code == 201, resp.json()
    assert resp.json()["status"] == "delivered"
    message = Message.objects.get(pk=resp.json()["id"])
    assert message.delivered_at == sent_at + timedelta(minutes=1)
    resp = record(api, external_id="nl-0002", status="delivered")
    assert resp.status_code == 201 and resp.json()["status"] == "delivered"
    assert resp.json()["delivered_at"] == resp.json()["sent_at"]


def test_rerecording_the_same_external_id_returns_the_first_record_and_writes_nothing(api):
    ReachableRecipientFactory(external_id="r1")
    ReachableRecipientFactory(external_id="r2")
    first = record(api)
    assert first.status_code == 201
    again = record(api)
    assert again.status_code == 200
    assert again.json() == first.json()
    # Even a repeat that disagrees (another time, content or recipient) gets the first record.
    changed = record(api, recipient="r2", content={"body": "other"}, sent_at=iso(timezone.now()))
    assert changed.status_code == 200 and changed.json()["id"] == first.json()["id"]
    assert Message.objects.count() == 1
    # The same id in another system is another send.
    other = record(api, source_system="legacy-sms", channel="sms", purpose="transactional")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert Message.objects.filter(source=Source.EXTERNAL).count() == 2


def test_idempotency_key_is_honoured(api):
    ReachableRecipientFactory(external_id="r1")
    sent_at = iso(timezone.now() - timedelta(minutes=5))
    first = record(api, headers={"Idempotency-Key": "k-1"}, sent_at=sent_at)
    replay = record(api, headers={"Idempotency-Key": "k-1"}, sent_at=sent_at)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json() and replay["Idempotent-Replayed"] == "true"
    conflict = record(api, headers={"Idempotency-Key": "k-1"}, sent_at=sent_at, external_id="nl-0002")
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
    assert Message.objects.count() == 1


FUTURE = iso(timezone.now() + timedelta(days=1))


@pytest.mark.parametrize(
    "body,field",
    [
        ({"sent_at": FUTURE}, "sent_at"),
        ({"sent_at": "0001-01-01T00:00:00Z"}, "sent_at"),
        ({"sent_at": "9999-12-31T23:59:59Z"}, "sent_at"),
        ({"sent_at": "yesterday"}, "sent_at"),
        ({"sent_at": 1714000000}, "sent_at"),
        ({"sent_at": None}, "sent_at"),
        ({"channel": "fax"}, "channel"),
        ({"channel": "auto"}, "channel"),
        ({"channel": ["email"]}, "channel"),
        ({"purpose": "spam"}, "purpose"),
        ({"recipient": "nobody"}, "recipient"),
        ({"recipient": ""}, "recipient"),
        ({"recipient": "r\x001"}, "recipient"),
        ({"recipient": 42}, "recipient"),
        ({"source_system": ""}, "source_system"),
        ({"source_system": "x" * 101}, "source_system"),
        ({"external_id": None}, "external_id"),
        ({"external_id": "x" * 256}, "external_id"),
        ({"external_id": "a\x00b"}, "external_id"),
        ({"external_id": {"id": 1}}, "external_id"),
        ({"content": {"body": "nul \x00 here"}}, "content"),
        ({"content": {"body": "x" * 20_001}}, "content"),
        ({"content": 12}, "content"),
        ({"status": "opened"}, "status"),
        ({"delivered_at": iso(timezone.now() - timedelta(days=3))}, "delivered_at"),
        ({"status": "sent", "delivered_at": iso(timezone.now())}, "delivered_at"),
        ({"create_recipient": "maybe"}, "create_recipient"),
        ({"create_recipient": True, "recipient": "new", "timezone": "Mars/Olympus"}, "timezone"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_writes_nothing(api, body, field):
    ReachableRecipientFactory(external_id="r1")
    recipients = Recipient.objects.count()
    resp = record(api, **body)
    assert resp.status_code == 400, resp.content
    # The field, or a part of it (the API names `content.body` for a NUL anywhere in a request).
    assert any(k == field or k.startswith(f"{field}.") for k in resp.json()), resp.json()
    assert not Message.objects.exists() and Recipient.objects.count() == recipients


@pytest.mark.parametrize(
    "name", ["recipient", "channel", "purpose", "sent_at", "source_system", "external_id"]
)
def test_a_missing_field_is_400_naming_it(api, name):
    ReachableRecipientFactory(external_id="r1")
    payload = {
        "recipient": "r1",
        "channel": "email",
        "purpose": "engagement",
        "sent_at": iso(timezone.now()),
        "source_system": "esp",
        "external_id": "1",
    }
    del payload[name]
    resp = api.post(URL, payload, format="json")
    assert resp.status_code == 400 and resp.json()[name] == ["This field is required."]
    assert not Message.objects.exists()


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "null", "{not json"])
def test_a_body_that_is_not_an_object_is_400(api, raw):
    resp = api.generic("POST", URL, raw, content_type="application/json")
    assert resp.status_code == 400
    assert not Message.objects.exists()


def test_create_recipient_creates_an_unknown_recipient_like_events(api):
    resp = record(api, recipient="newcomer", create_recipient=True, timezone="Europe/Paris")
    assert resp.status_code == 201, resp.json()
    recipient = Recipient.objects.get(external_id="newcomer")
    assert recipient.timezone == "Europe/Paris"
    assert Message.objects.get().recipient == recipient


def test_lint_violations_are_kept_as_warnings_never_refused(api):
    ReachableRecipientFactory(external_id="r1")
    # A legacy service texted a promotion: SMS carries only transactional and alert messages.
    resp = record(
        api,
        channel="sms",
        purpose="promotional",
        source_system="legacy-sms",
        external_id="SM1",
        content={"body": "SALE! 50% off everything this weekend, shop now"},
    )
    assert resp.status_code == 201, resp.json()
    codes = {w["code"]: w for w in resp.json()["warnings"]}
    assert "sms_purpose" in codes and codes["sms_purpose"]["severity"] == "block"
    assert "SMS" in codes["sms_purpose"]["detail"] or "sms" in codes["sms_purpose"]["detail"].lower()
    # A push too long for its job, recorded as it was.
    resp = record(
        api,
        channel="push",
        source_system="braze",
        external_id="push-1",
        content={"title": "Hello", "body": "word " * 60},
    )
    assert resp.status_code == 201
    assert "push_too_long" in {w["code"] for w in resp.json()["warnings"]}
    message = Message.objects.get(pk=resp.json()["id"])
    assert "push_too_long" in {w["code"] for w in message.warnings}
    # Without content only the purpose is judged.
    resp = record(api, channel="sms", purpose="promotional", source_system="legacy-sms", external_id="SM2")
    assert [w["code"] for w in resp.json()["warnings"]] == ["sms_purpose"]
    resp = record(api, channel="email", source_system="esp", external_id="e-1", content=None)
    assert resp.json()["warnings"] == []


def send(api, channel="email"):
    content = {"subject": "A nudge", "body": "Something new."}
    if channel == "push":
        content = {"title": "A nudge", "body": "Something new.", "action_url": "app://home"}
    return api.post(
        "/api/v1/messages/",
        {"recipient": "r1", "channel": channel, "purpose": "engagement", "content": content},
        format="json",
    )


def test_recorded_sends_make_the_next_orchestrated_engagement_message_defer_naming_the_rule(api):
    ReachableRecipientFactory(external_id="r1")
    now = timezone.now()
    for n, hours in enumerate((20, 10, 2)):
        assert (
            record(api, external_id=f"nl-{n}", sent_at=iso(now - timedelta(hours=hours))).status_code == 201
        )
    resp = send(api)
    assert resp.status_code == 201
    body = resp.json()
    assert body["status"] == "deferred"
    assert body["rule"] == DAILY
    assert "3 of 3" in body["reason"]
    # The slot frees when the oldest recorded send leaves the 24-hour window: counted from its sent time.
    deliver_after = datetime.fromisoformat(body["deliver_after"].replace("Z", "+00:00"))
    expected = now - timedelta(hours=20) + timedelta(hours=24)
    assert abs((deliver_after - expected).total_seconds()) < 2


def test_an_external_push_holds_the_next_push_for_four_hours_from_its_sent_time(api):
    ReachableRecipientFactory(external_id="r1", timezone=daytime_zone())
    sent_at = timezone.now() - timedelta(hours=1)
    resp = record(
        api,
        channel="push",
        source_system="braze",
        external_id="push-9",
        sent_at=iso(sent_at),
        content={"title": "Flash sale", "body": "Today only.", "action_url": "app://sale"},
    )
    assert resp.status_code == 201
    body = send(api, channel="push").json()
    assert body["status"] == "deferred" and body["rule"] == PUSH_4H
    assert PUSH_4H in Message.objects.get(pk=body["id"]).decisions.get().rule
    deliver_after = datetime.fromisoformat(body["deliver_after"].replace("Z", "+00:00"))
    assert abs((deliver_after - (sent_at + timedelta(hours=4))).total_seconds()) < 2


def test_a_send_recorded_outside_every_window_does_not_count(api):
    ReachableRecipientFactory(external_id="r1")
    now = timezone.now()
    for n in range(3):
        record(api, external_id=f"old-{n}", sent_at=iso(now - timedelta(hours=25 + n)))
    assert send(api).json()["status"] == "accepted"


def daytime_zone() -> str:
    """A fixed-offset zone where it is now early afternoon, so quiet hours never hold a push."""
    offset = (13 - timezone.now().hour + 12) % 24 - 12
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def test_the_timeline_and_history_show_the_recorded_send_with_its_source(api):
    ReachableRecipientFactory(external_id="r1")
    sent_at = timezone.now() - timedelta(hours=5)
    mid = record(api, sent_at=iso(sent_at)).json()["id"]
    send(api)
    timeline = api.get("/api/v1/recipients/r1/timeline/").json()
    recorded = next(e["message"] for e in timeline if e["message"] and e["message"]["id"] == mid)
    assert recorded["source"] == "external" and recorded["source_system"] == "esp-newsletter"
    assert recorded["external_id"] == "nl-0001"
    # Placed at its send time, after the orchestrated message sent just now.
    assert timeline[-1]["message"]["id"] == mid
    history = api.get("/api/v1/recipients/r1/messages/").json()
    rows = history["results"] if isinstance(history, dict) else history
    assert {m["source"] for m in rows} == {"external", "api"}
    detail = api.get(f"/api/v1/messages/{mid}/").json()
    assert detail["source_system"] == "esp-newsletter" and detail["decisions"] == []


def test_a_recorded_in_app_message_never_reaches_the_inbox(api):
    ReachableRecipientFactory(external_id="r1")
    mid = record(
        api,
        channel="in_app",
        source_system="old-app",
        external_id="banner-1",
        content={"title": "Hi", "body": "Shown by the old app.", "action_url": "app://home"},
    ).json()["id"]
    resp = api.get("/api/v1/recipients/r1/inbox/")
    assert resp.status_code == 200
    ids = [m["id"] for m in (resp.json()["results"] if isinstance(resp.json(), dict) else resp.json())]
    assert mid not in ids
    assert Message.objects.get(pk=mid).status == MessageStatus.SENT


def test_an_unknown_recipient_is_not_created_without_the_flag(api):
    RecipientFactory(external_id="someone")
    resp = record(api, recipient="ghost")
    assert resp.status_code == 400
    assert "create_recipient" in resp.json()["recipient"][0]
    assert not Recipient.objects.filter(external_id="ghost").exists()


def test_a_recorded_delivered_send_is_a_touch_in_the_attribution_report(api):
    from journeys.models import ConversionDefinition
    from orchestrator.models import Event

    ReachableRecipientFactory(external_id="r1")
    ConversionDefinition.objects.create(name="purchase", event="purchase")
    now = timezone.now()
    resp = record(
        api, channel="push", source_system="braze", external_id="p-1", sent_at=iso(now - timedelta(hours=3))
    )
    assert resp.status_code == 201
    record(api, status="delivered", sent_at=iso(now - timedelta(hours=2)))
    Event.objects.create(
        recipient=Recipient.objects.get(external_id="r1"),
        name="purchase",
        occurred_at=now - timedelta(hours=1),
    )
    day = timedelta(days=1)
    body = api.get(
        "/api/v1/reports/attribution/",
        {
            "from": (now - day).date().isoformat(),
            "to": (now + day).date().isoformat(),
            "conversion": "purchase",
        },
    ).json()
    # The delivered newsletter reached the recipient (a touch by default); the push, only `sent`, did not.
    assert body["last"] == {"email": 1.0} and body["conversions"] == 1


def test_recording_needs_the_send_scope_and_creating_a_recipient_recipients_write(api_user):
    from rest_framework.test import APIClient

    from orchestrator.models import ServiceToken

    def client(name, scopes):
        token = ServiceToken(name=name, user=api_user, scopes=scopes)
        raw = token.key_issue()
        token.save()
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return c

    ReachableRecipientFactory(external_id="r1")
    refused = record(client("reader", ["recipients:read"]))
    assert refused.status_code == 403 and refused.json()["code"] == "missing_scope"
    assert "'send'" in refused.json()["detail"]
    sender = client("esp-sync", ["send"])
    assert record(sender).status_code == 201
    refused = record(sender, recipient="newcomer", external_id="nl-2", create_recipient=True)
    assert refused.status_code == 403 and "recipients:write" in refused.json()["detail"]
    assert not Recipient.objects.filter(external_id="newcomer").exists()
    assert Message.objects.count() == 1
