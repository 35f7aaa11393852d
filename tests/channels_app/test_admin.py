"""The channels admin: policies with the lint preview, read-only attempts, dead letters with retry now."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command

from channels_app.backends import sms
from channels_app.models import ChannelPolicy, DeliveryAttempt
from orchestrator.models import Channel, Message, MessageStatus

from .factories import AcceptedMessageFactory, DeliveryAttemptFactory

pytestmark = pytest.mark.django_db


def test_policies_are_listed_and_editable(admin_client):
    resp = admin_client.get("/admin/channels_app/channelpolicy/")
    assert resp.status_code == 200
    assert b"SMS is intimate" in resp.content and b"Try content against the policies" in resp.content
    sms_policy = ChannelPolicy.objects.get(channel="sms")
    page = admin_client.get(f"/admin/channels_app/channelpolicy/{sms_policy.pk}/change/")
    assert page.status_code == 200 and b"Try content against the SMS policy" in page.content


def test_editing_a_policy_changes_what_the_lint_says(admin_client):
    push = ChannelPolicy.objects.get(channel="push")
    form = {
        "job": "Push is urgent",
        # Checkboxes for purposes, tags (comma-separated without JavaScript) for lists, ISO 8601 or HH:MM:SS.
        "allowed_purposes": ["transactional", "alert"],
        "default_ttl": "01:00:00",
        "title_required": "on",
        "product_url_prefixes": "app://, https://shop.example.com/",
        "title_max_chars": "50",
        "body_max_chars": "178",
        "body_max_words": "30",
        "max_actions": "1",
        "marketing_terms": '[{"value": "sale"}, {"value": "50% off"}]',  # what Tagify posts
    }
    resp = admin_client.post(f"/admin/channels_app/channelpolicy/{push.pk}/change/", form)
    assert resp.status_code == 302, resp.content[:2000]
    push.refresh_from_db()
    assert push.default_ttl == timedelta(hours=1)
    assert push.allowed_purposes == ["transactional", "alert"]
    assert push.product_url_prefixes == ["app://", "https://shop.example.com/"]
    assert push.marketing_terms == ["sale", "50% off"]
    preview = admin_client.get(
        "/admin/channels_app/channelpolicy/lint/",
        {
            "channel": "push",
            "purpose": "promotional",
            "title": "Sale",
            "body": "50% off",
            "action_url": "app://s",
        },
    )
    assert b"push_purpose" in preview.content and b"Refused" in preview.content


def test_the_lint_preview_shows_codes_severities_and_reasons(admin_client):
    resp = admin_client.get(
        "/admin/channels_app/channelpolicy/lint/",
        {"channel": "sms", "purpose": "transactional", "body": "Order confirmed. Flash sale: 30% off today!"},
    )
    assert resp.status_code == 200
    assert b"sms_looks_like_marketing" in resp.content and b"block" in resp.content
    assert b"SMS is intimate" in resp.content
    clean = admin_client.get(
        "/admin/channels_app/channelpolicy/lint/",
        {"channel": "sms", "purpose": "alert", "body": "New sign-in."},
    )
    assert b"Fits the channel" in clean.content


def test_restore_defaults_action(admin_client):
    ChannelPolicy.objects.filter(channel="email").update(subject_required=False, job="changed")
    email = ChannelPolicy.objects.get(channel="email")
    resp = admin_client.post(
        "/admin/channels_app/channelpolicy/", {"action": "restore_defaults", "_selected_action": [email.pk]}
    )
    assert resp.status_code == 302
    email.refresh_from_db()
    assert email.subject_required and email.job.startswith("Email is patient")


def test_delivery_attempts_are_read_only_with_filters(admin_client):
    attempt = DeliveryAttemptFactory(response="HTTP 503: busy", outcome="transient")
    DeliveryAttemptFactory(message=attempt.message, number=99, outcome="success")
    resp = admin_client.get("/admin/channels_app/deliveryattempt/?outcome=transient")
    assert resp.status_code == 200 and b"HTTP 503: busy" in resp.content
    [row] = resp.context["health"]
    assert (row["provider"], row["total"], row["success_rate"]) == ("sms:locmem", 2, 50.0)
    assert b"Delivery health" in resp.content
    assert admin_client.get(f"/admin/channels_app/deliveryattempt/{attempt.pk}/change/").status_code == 200
    assert admin_client.get("/admin/channels_app/deliveryattempt/add/").status_code == 403


def dead_letter(**kw):
    return AcceptedMessageFactory(
        channel=Channel.SMS,
        status=MessageStatus.FAILED,
        attempts=8,
        last_error="Gave up after 8 attempts",
        **kw,
    )


def test_dead_letters_list_only_failed_messages_with_their_error(admin_client):
    failed = dead_letter()
    AcceptedMessageFactory(channel=Channel.SMS, status=MessageStatus.SENT)
    resp = admin_client.get("/admin/channels_app/deadletter/")
    assert resp.status_code == 200
    assert resp.context["cl"].result_count == 1 and b"Gave up after 8 attempts" in resp.content
    assert admin_client.get("/admin/channels_app/deadletter/?why=exhausted").context["cl"].result_count == 1
    assert admin_client.get(f"/admin/channels_app/deadletter/{failed.pk}/change/").status_code == 200


def test_retry_now_redelivers_dead_letters(admin_client, django_capture_on_commit_callbacks):
    sms.outbox.clear()
    failed = dead_letter()
    DeliveryAttemptFactory(message=failed, number=1, outcome="permanent")
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            "/admin/channels_app/deadletter/", {"action": "retry_now", "_selected_action": [failed.pk]}
        )
    assert resp.status_code == 302
    failed = Message.objects.get(pk=failed.pk)
    assert failed.status == "sent" and [m["message_id"] for m in sms.outbox] == [failed.pk]
    assert DeliveryAttempt.objects.filter(message=failed).count() == 2


def test_seed_demo_is_idempotent():
    out = io.StringIO()
    call_command("seed_demo", "--recipients", "8", "--no-progress", stdout=out)
    call_command("seed_demo", "--recipients", "8", "--no-progress", stdout=out)
    assert ChannelPolicy.objects.count() == 4
    assert Message.objects.filter(source_ref="demo:channels", status="failed").count() == 3
    assert "Channel policies" in out.getvalue()
