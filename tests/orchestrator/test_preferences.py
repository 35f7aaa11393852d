"""The preference centre: the signed link (valid, tampered, expired, rotated), the page in the
recipient's language, one-click unsubscribe (RFC 8058), every change recorded with its source."""

from datetime import timedelta

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone

from orchestrator.consent import preferences_set
from orchestrator.models import ChangeKind, ChangeSource, Channel, Preference, PreferenceChange, Purpose
from orchestrator.preferences import (
    LinkExpired,
    LinkInvalid,
    list_unsubscribe_headers,
    preference_token_make,
    preference_token_read,
    preference_url,
)

from .factories import MessageFactory, ReachableRecipientFactory

pytestmark = pytest.mark.django_db


def page_path(token: str, one_click: bool = False) -> str:
    return preference_url(token, one_click=one_click).split("://", 1)[1].partition("/")[2].join(["/", ""])


def opted_out(recipient, channel=Channel.EMAIL):
    return set(
        Preference.objects.filter(recipient=recipient, channel=channel, opted_in=False).values_list(
            "purpose", flat=True
        )
    )


def test_a_valid_link_names_its_recipient_and_message():
    r = ReachableRecipientFactory()
    token = preference_token_make(recipient_id=r.pk, message_id=7, channel="email", purpose="promotional")
    claims = preference_token_read(token)
    assert (claims.recipient_id, claims.message_id, claims.channel, claims.purpose) == (
        r.pk,
        7,
        "email",
        "promotional",
    )


def test_a_tampered_link_is_refused_with_a_clear_page_and_nothing_changes():
    r = ReachableRecipientFactory()
    token = preference_token_make(recipient_id=r.pk, channel="email", purpose="promotional")
    other = ReachableRecipientFactory()
    # Swap the payload for another recipient's, keeping the first signature.
    forged = preference_token_make(recipient_id=other.pk).split(":")[0] + ":" + token.split(":", 1)[1]
    with pytest.raises(LinkInvalid):
        preference_token_read(forged)
    client = Client()
    for bad in (forged, token[:-2] + "xx", "not-a-token"):
        page = client.get(page_path(bad))
        assert page.status_code == 400 and b"This link does not work" in page.content
        assert (
            client.post(page_path(bad, one_click=True), {"List-Unsubscribe": "One-Click"}).status_code == 400
        )
    assert not Preference.objects.exists() and not PreferenceChange.objects.exists()


def test_an_expired_link_is_refused_and_changes_nothing(settings):
    r = ReachableRecipientFactory()
    settings.CONSENT = {**settings.CONSENT, "LINK_MAX_AGE": timedelta(seconds=-1)}
    token = preference_token_make(recipient_id=r.pk, channel="email", purpose="promotional")
    with pytest.raises(LinkExpired):
        preference_token_read(token)
    client = Client()
    page = client.get(page_path(token))
    assert page.status_code == 410 and b"This link has expired" in page.content
    assert client.post(page_path(token, one_click=True), {"List-Unsubscribe": "One-Click"}).status_code == 410
    assert not Preference.objects.exists()


def test_a_link_signed_before_a_secret_key_rotation_no_longer_works(settings):
    r = ReachableRecipientFactory()
    token = preference_token_make(recipient_id=r.pk)
    settings.SECRET_KEY = "a-brand-new-secret-key-after-rotation-0123456789"
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(LinkInvalid):
        preference_token_read(token)
    assert Client().get(page_path(token)).status_code == 400


def test_the_page_shows_channels_and_purposes_in_plain_words_and_is_not_indexable():
    r = ReachableRecipientFactory()
    page = Client().get(page_path(preference_token_make(recipient_id=r.pk)))
    assert page.status_code == 200
    text = page.content.decode()
    for words in ("Email", "Push notifications", "Text messages (SMS)", "News and offers", "Always on"):
        assert words in text
    assert "noindex" in page["X-Robots-Tag"] and "no-store" in page["Cache-Control"]
    assert '<meta name="robots" content="noindex' in text
    import re

    assert "u•••@example.com" in text and f"{r.external_id}@example.com" not in text  # masked addresses
    assert r.external_id not in re.sub(r"<[^>]*>", "", text)


@pytest.mark.parametrize(
    ("locale", "words"),
    [
        ("fr-FR", "Vos préférences de messages"),
        ("pt-BR", "Suas preferências de mensagens"),
        ("de-DE", "Your"),
    ],
)
def test_the_page_speaks_the_recipients_language(locale, words):
    r = ReachableRecipientFactory(locale=locale)
    page = Client().get(page_path(preference_token_make(recipient_id=r.pk)))
    assert words in page.content.decode()


def test_unsubscribe_and_resubscribe_per_purpose_and_per_channel_are_recorded_as_link_changes():
    r = ReachableRecipientFactory()
    token = preference_token_make(recipient_id=r.pk)
    client = Client()
    client.get(page_path(token))
    answer = client.post(page_path(token), {"action": "off", "channel": "email", "purpose": "promotional"})
    assert answer.status_code == 302
    assert opted_out(r) == {"promotional"}
    assert "no longer get news and offers by email" in client.get(answer["Location"]).content.decode()
    client.post(page_path(token), {"action": "off", "channel": "push", "purpose": ""})
    assert opted_out(r, Channel.PUSH) == {"alert", "engagement", "promotional"}  # never transactional
    client.post(page_path(token), {"action": "on", "channel": "email", "purpose": "promotional"})
    assert opted_out(r) == set()
    changes = list(
        PreferenceChange.objects.order_by("id").values_list("channel", "purpose", "kind", "source")
    )
    assert changes == [
        ("email", "promotional", ChangeKind.UNSUBSCRIBE, ChangeSource.LINK),
        ("push", "", ChangeKind.UNSUBSCRIBE, ChangeSource.LINK),
        ("email", "promotional", ChangeKind.RESUBSCRIBE, ChangeSource.LINK),
    ]


def test_the_page_refuses_a_transactional_opt_out_and_bad_fields_with_a_400():
    r = ReachableRecipientFactory()
    token = preference_token_make(recipient_id=r.pk)
    client = Client()
    for data in (
        {"action": "off", "channel": "email", "purpose": "transactional"},
        {"action": "off", "channel": "fax", "purpose": ""},
        {"action": "maybe", "channel": "email", "purpose": ""},
        {"action": "off", "channel": "email\x00", "purpose": ""},
    ):
        assert client.post(page_path(token), data).status_code == 400
    assert not Preference.objects.exists()


def test_one_click_post_opts_out_of_the_links_purpose_without_a_page_and_attributes_the_message():
    r = ReachableRecipientFactory()
    m = MessageFactory(recipient=r, channel=Channel.EMAIL, purpose=Purpose.PROMOTIONAL)
    token = preference_token_make(recipient_id=r.pk, message_id=m.pk, channel="email", purpose="promotional")
    answer = Client(enforce_csrf_checks=True).post(
        page_path(token, one_click=True), {"List-Unsubscribe": "One-Click"}
    )
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/plain")
    assert opted_out(r) == {"promotional"}
    change = PreferenceChange.objects.get()
    assert (change.source, change.message_id, change.detail) == ("link", m.pk, "one-click (RFC 8058)")


def test_a_get_on_the_one_click_url_changes_nothing_and_offers_the_button():
    r = ReachableRecipientFactory()
    token = preference_token_make(recipient_id=r.pk, channel="email", purpose="engagement")
    page = Client().get(page_path(token, one_click=True))
    assert page.status_code == 200 and 'id="oneclick"' in page.content.decode()
    assert "reminders and tips by email" in page.content.decode()
    assert not Preference.objects.exists()


def test_a_link_never_attributes_another_recipients_message():
    r, other = ReachableRecipientFactory(), ReachableRecipientFactory()
    theirs = MessageFactory(recipient=other)
    token = preference_token_make(
        recipient_id=r.pk, message_id=theirs.pk, channel="email", purpose="engagement"
    )
    Client().post(page_path(token, one_click=True), {"List-Unsubscribe": "One-Click"})
    assert PreferenceChange.objects.get().message_id is None and not other.preferences.exists()


def test_list_unsubscribe_headers_carry_the_signed_url_and_a_mailto(settings):
    settings.PUBLIC_BASE_URL = "https://messages.example.com"
    headers = list_unsubscribe_headers(recipient_id=5, message_id=9, channel="email", purpose="promotional")
    url, mailto = headers["List-Unsubscribe"].split(", ")
    assert url.startswith("<https://messages.example.com/preferences/") and url.endswith("/unsubscribe/>")
    assert mailto.startswith("<mailto:unsubscribe@") and "subject=unsubscribe%20" in mailto
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = url[1:-1].split("/preferences/")[1].split("/")[0]
    assert preference_token_read(token).message_id == 9


def test_preferences_set_records_nothing_when_nothing_changes():
    r = ReachableRecipientFactory()
    at = timezone.now()
    kw = dict(recipient=r, channel="email", purposes=["engagement"], source="api", at=at)
    assert preferences_set(opted_in=True, **kw) is False
    assert preferences_set(opted_in=False, **kw) is True
    assert preferences_set(opted_in=False, **kw) is False
    assert PreferenceChange.objects.count() == 1


def test_signing_salt_keeps_other_signed_values_from_passing_as_links():
    token = signing.dumps({"r": 1})  # Django's default salt, e.g. from another feature
    with pytest.raises(LinkInvalid):
        preference_token_read(token)
