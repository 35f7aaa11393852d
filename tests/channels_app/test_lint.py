"""One test (at least) per lint code: the code, its severity, and a reason naming the channel's job."""

from datetime import timedelta

import pytest

from channels_app.lint import Severity, message_lint
from channels_app.models import ChannelPolicy

pytestmark = pytest.mark.django_db

PUSH_OK = {"title": "Your driver is here", "body": "Blue Prius, plate 7ABC123.", "action_url": "app://ride"}


def codes(violations, severity=None):
    return {v.code for v in violations if severity is None or v.severity == severity}


def lint(channel, content, purpose="transactional"):
    return message_lint(channel=channel, purpose=purpose, content=content)


def test_content_that_fits_every_channel_has_no_violations():
    assert lint("push", PUSH_OK) == []
    assert lint("email", {"subject": "Your receipt", "body": "Details of your order, at length."}) == []
    assert lint("in_app", {"title": "Your cart", "body": "Still there.", "action_url": "app://cart"}) == []
    assert lint("sms", {"body": "Your code is 428193."}) == []


def test_push_too_long_blocks_and_counts_the_words():
    body = " ".join(["word"] * 212)
    [v] = [v for v in lint("push", {**PUSH_OK, "body": body}) if v.code == "push_too_long"]
    assert v.severity == Severity.BLOCK
    assert "212 words" in v.reason and "one time-sensitive action" in v.reason


def test_push_title_too_long_blocks():
    assert "push_too_long" in codes(lint("push", {**PUSH_OK, "title": "x" * 80}), Severity.BLOCK)


def test_push_multiple_actions_blocks_buttons_and_links_in_the_body():
    two_buttons = {**PUSH_OK, "actions": ["app://a", "app://b"]}
    assert "push_multiple_actions" in codes(lint("push", two_buttons), Severity.BLOCK)
    link_in_body = {**PUSH_OK, "body": "Or see https://example.com/other"}
    [v] = [v for v in lint("push", link_in_body) if v.code == "push_multiple_actions"]
    assert "2 actions" in v.reason


def test_push_without_title_or_action_only_warns():
    found = lint("push", {"body": "Your driver is here."})
    assert codes(found, Severity.WARN) == {"push_no_title", "push_no_action"}
    assert codes(found, Severity.BLOCK) == set()


def test_email_no_subject_blocks_with_the_channel_job():
    [v] = lint("email", {"body": "Hello"})
    assert (v.code, v.severity) == ("email_no_subject", Severity.BLOCK)
    assert v.reason.startswith("Email is patient")


@pytest.mark.parametrize("channel", ["email", "push", "sms", "in_app"])
def test_missing_body_blocks_on_every_channel(channel):
    assert f"{channel}_no_body" in codes(
        lint(channel, {"subject": "s", "title": "t", "action_url": "app://x"})
    )


def test_in_app_without_context_blocks():
    [v] = lint("in_app", {"title": "Hi", "body": "Something"})
    assert (v.code, v.severity) == ("in_app_no_context", Severity.BLOCK)
    assert "inside the product" in v.reason


def test_in_app_with_an_outside_url_has_no_context():
    found = lint("in_app", {"title": "Hi", "body": "x", "action_url": "https://elsewhere.example.com/"})
    assert "in_app_no_context" in codes(found, Severity.BLOCK)


@pytest.mark.parametrize("purpose", ["promotional", "engagement"])
def test_sms_purpose_blocks_anything_but_transactional_and_alerts(purpose):
    [v] = [v for v in lint("sms", {"body": "We miss you"}, purpose=purpose) if v.code == "sms_purpose"]
    assert v.severity == Severity.BLOCK
    assert "transactional confirmations and rare high-trust alerts" in v.reason


def test_sms_looks_like_marketing_blocks_a_transactional_sale():
    found = lint("sms", {"body": "Order confirmed! Use code SAVE20 for 20% off your next order - big sale"})
    [v] = [v for v in found if v.code == "sms_looks_like_marketing"]
    assert v.severity == Severity.BLOCK and "sale" in v.reason and "% off" in v.reason


def test_sms_marketing_terms_match_whole_words_only():
    assert lint("sms", {"body": "Your wholesale order 1234 has shipped."}) == []


def test_sms_too_long_blocks_and_multipart_warns():
    assert "sms_too_long" in codes(lint("sms", {"body": "x" * 400}), Severity.BLOCK)
    found = lint("sms", {"body": "x" * 200})
    assert codes(found) == {"sms_multipart"} and "2 SMS of 160" in found[0].reason


def test_sms_with_unicode_counts_70_characters_per_segment():
    found = lint("sms", {"body": "Код подтверждения: 428193. " * 3})
    assert codes(found) == {"sms_multipart"} and "of 70" in found[0].reason


def test_limits_come_from_the_editable_policy():
    ChannelPolicy.objects.filter(channel="push").update(body_max_words=3)
    assert "push_too_long" in codes(lint("push", {**PUSH_OK, "body": "one two three four"}))
    ChannelPolicy.objects.filter(channel="sms").update(allowed_purposes=[])
    assert "sms_purpose" not in codes(lint("sms", {"body": "Hello"}, purpose="engagement"))


def test_lint_falls_back_to_shipped_defaults_without_a_policy_row():
    ChannelPolicy.objects.all().delete()
    assert "email_no_subject" in codes(lint("email", {"body": "Hello"}))


def test_default_policies_are_installed_with_a_short_push_ttl():
    policies = {p.channel: p for p in ChannelPolicy.objects.all()}
    assert set(policies) == {"email", "push", "sms", "in_app"}
    assert policies["push"].default_ttl <= timedelta(hours=4)
    assert policies["email"].default_ttl is None
    assert policies["sms"].allowed_purposes == ["transactional", "alert"]


def test_auto_and_unknown_channels():
    assert lint("auto", {"body": "Hello"}) == []
    assert codes(lint("auto", {"title": "no body"})) == {"content_no_body"}
    assert codes(lint("fax", {"body": "Hello"})) == {"unknown_channel"}
    assert codes(message_lint(channel="email", purpose="transactional", content="hello")) == {
        "content_invalid"
    }
