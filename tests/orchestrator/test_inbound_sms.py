"""POST /api/v1/webhooks/twilio/inbound/: STOP / START / HELP keywords, Twilio's signature, no enumeration."""

import pytest
from django.test import Client

from channels_app.backends import sms
from channels_app.webhooks import twilio_signature
from governor.models import CapRule
from orchestrator.models import ChangeKind, ContactPoint, Message, PreferenceChange

from .factories import ContactPointFactory, MessageFactory, RecipientFactory

pytestmark = pytest.mark.django_db

TOKEN = "twilio-auth-token-for-tests"
NUMBER = "+14155550199"
PATH = "/api/v1/webhooks/twilio/inbound/"


@pytest.fixture(autouse=True)
def twilio(settings):
    settings.CHANNELS = {
        **settings.CHANNELS,
        "SMS_HTTP": {**settings.CHANNELS["SMS_HTTP"], "AUTH_TOKEN": TOKEN},
    }
    settings.PUBLIC_BASE_URL = "https://messages.example.com"
    sms.outbox.clear()


@pytest.fixture
def holder():
    cp = ContactPointFactory(
        channel="sms", address=NUMBER, recipient=RecipientFactory(timezone="Europe/Paris")
    )
    return cp.recipient


def post(body: str, *, sender: str = NUMBER, signature: str | None = None, url=None):
    data = {"From": sender, "To": "+14155550100", "Body": body, "MessageSid": "SM123"}
    url = url or "https://messages.example.com" + PATH
    if signature is None:
        signature = twilio_signature(auth_token=TOKEN, url=url, params={k: [v] for k, v in data.items()})
    return Client().post(PATH, data, HTTP_X_TWILIO_SIGNATURE=signature)


def replies():
    return [m["body"] for m in sms.outbox]


@pytest.mark.parametrize(
    "word", ["STOP", "stop", "StopAll", "UNSUBSCRIBE", "cancel", "END", "QUIT", " stop. "]
)
def test_every_stop_keyword_opts_the_number_out_and_confirms(
    word, holder, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        answer = post(word)
    assert answer.status_code == 200 and answer["Content-Type"] == "application/xml"
    assert ContactPoint.objects.get(address=NUMBER).opted_in is False
    change = PreferenceChange.objects.get()
    assert (change.kind, change.source, change.channel, change.address) == (
        ChangeKind.STOP,
        "provider",
        "sms",
        NUMBER,
    )
    assert replies() == [
        "You are unsubscribed and will receive no more messages. Reply START to resubscribe."
    ]
    reply = Message.objects.get(source="reply")
    assert (reply.purpose, reply.status, reply.to_address) == ("transactional", "sent", NUMBER)


@pytest.mark.parametrize("word", ["START", "unstop"])
def test_start_keywords_opt_the_number_back_in(word, holder, django_capture_on_commit_callbacks):
    ContactPoint.objects.filter(address=NUMBER).update(opted_in=False)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(word).status_code == 200
    assert ContactPoint.objects.get(address=NUMBER).opted_in is True
    assert PreferenceChange.objects.get().kind == ChangeKind.START
    assert replies() == ["You are subscribed again. Reply HELP for help, STOP to unsubscribe."]


def test_help_answers_with_the_configured_text_and_changes_nothing(
    holder, settings, django_capture_on_commit_callbacks
):
    settings.CONSENT = {**settings.CONSENT, "SMS_HELP_TEXT": "Acme alerts. Reply STOP to stop."}
    with django_capture_on_commit_callbacks(execute=True):
        assert post("help").status_code == 200
    assert replies() == ["Acme alerts. Reply STOP to stop."]
    assert ContactPoint.objects.get(address=NUMBER).opted_in is True and not PreferenceChange.objects.exists()


def test_confirmations_bypass_caps_and_quiet_hours(holder, django_capture_on_commit_callbacks):
    # A cap that would hold any transactional SMS, already used up, and quiet hours all day.
    CapRule.objects.create(
        name="one sms a day", limit=1, window="24:00:00", channels=["sms"], purposes=["transactional"]
    )
    MessageFactory(recipient=holder, channel="sms", purpose="transactional", content={"body": "Code 1"})
    from governor.models import QuietHours

    QuietHours.objects.create(
        name="all day", channels=["sms"], start="00:00", end="23:59", exempt_purposes=[]
    )
    with django_capture_on_commit_callbacks(execute=True):
        post("STOP")
    assert replies() and Message.objects.get(source="reply").status == "sent"


def test_after_stop_ordinary_sms_is_refused_as_unreachable(holder, api):
    post("STOP")
    answer = api.post(
        "/api/v1/messages/",
        {
            "recipient": holder.external_id,
            "channel": "sms",
            "purpose": "transactional",
            "content": {"body": "Code 2"},
        },
        format="json",
    )
    assert answer.status_code == 400 and answer.json()["codes"] == ["unreachable"]


def test_a_bad_or_missing_signature_is_403_and_writes_nothing(holder):
    for signature in (
        "",
        "bm90LXRoZS1zaWduYXR1cmU=",
        twilio_signature(auth_token="wrong", url="x", params={}),
    ):
        answer = post("STOP", signature=signature)
        assert answer.status_code == 403 and answer.json()["code"] == "bad_signature"
    assert ContactPoint.objects.get(address=NUMBER).opted_in is True
    assert not PreferenceChange.objects.exists() and not Message.objects.exists()


def test_an_api_token_is_no_credential_here(holder, api):
    answer = api.post(PATH, {"From": NUMBER, "Body": "STOP"}, format="multipart")
    assert answer.status_code == 403 and ContactPoint.objects.get(address=NUMBER).opted_in is True


def test_without_an_auth_token_configured_every_request_is_403(holder, settings):
    settings.CHANNELS = {**settings.CHANNELS, "SMS_HTTP": {**settings.CHANNELS["SMS_HTTP"], "AUTH_TOKEN": ""}}
    answer = post("STOP")
    assert answer.status_code == 403 and answer.json()["code"] == "not_configured"


def test_an_unknown_number_gets_200_and_nothing_happens(holder):
    for body in ("STOP", "HELP", "START"):
        assert post(body, sender="+14155550142").status_code == 200
    assert post("STOP", sender="not a number").status_code == 200
    assert not PreferenceChange.objects.exists() and not Message.objects.exists()


def test_any_other_text_is_acknowledged_and_ignored(holder):
    assert post("stop sending me these please").status_code == 200
    assert ContactPoint.objects.get(address=NUMBER).opted_in is True and not Message.objects.exists()


def test_an_unknown_provider_is_404(holder):
    assert (
        Client().post("/api/v1/webhooks/nexmo/inbound/", {"From": NUMBER, "Body": "STOP"}).status_code == 404
    )


def test_the_signature_over_the_servers_own_url_is_accepted_too(holder, settings):
    settings.PUBLIC_BASE_URL = "https://elsewhere.example.com"
    assert post("STOP", url="http://testserver" + PATH).status_code == 200
    assert ContactPoint.objects.get(address=NUMBER).opted_in is False


def test_stop_attributes_the_opt_out_to_the_last_sms_sent(holder):
    m = MessageFactory(recipient=holder, channel="sms", purpose="transactional", content={"body": "Code"})
    post("STOP")
    assert PreferenceChange.objects.get().message_id == m.pk
