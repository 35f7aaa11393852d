from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone

from orchestrator.models import ContactPoint, Preference, validate_timezone

from .factories import ContactPointFactory, MessageFactory, PreferenceFactory, RecipientFactory

pytestmark = pytest.mark.django_db


def test_external_id_is_unique():
    RecipientFactory(external_id="dup")
    with pytest.raises(IntegrityError):
        RecipientFactory(external_id="dup")


@pytest.mark.parametrize("name", ["Europe/Paris", "America/New_York", "UTC", "Asia/Kolkata"])
def test_iana_timezones_are_accepted(name):
    validate_timezone(name)


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "GMT+25", "paris"])
def test_unknown_timezones_are_rejected(name):
    with pytest.raises(ValidationError):
        validate_timezone(name)


def test_recipient_full_clean_rejects_bad_timezone():
    recipient = RecipientFactory.build(timezone="Nowhere/Land")
    with pytest.raises(ValidationError) as exc:
        recipient.full_clean()
    assert "timezone" in exc.value.message_dict


def test_contact_point_is_unique_per_recipient_channel_address():
    cp = ContactPointFactory()
    with pytest.raises(IntegrityError):
        ContactPoint.objects.create(recipient=cp.recipient, channel=cp.channel, address=cp.address)


def test_contact_point_needs_an_address_except_in_app():
    recipient = RecipientFactory()
    ContactPoint.objects.create(recipient=recipient, channel="in_app", address="")
    with pytest.raises(IntegrityError):
        ContactPoint.objects.create(recipient=recipient, channel="email", address="")


def test_contact_point_channel_is_checked_by_the_database():
    with pytest.raises(IntegrityError):
        ContactPointFactory(channel="fax", address="x")


def test_one_preference_per_channel_and_purpose():
    pref = PreferenceFactory()
    with pytest.raises(IntegrityError):
        Preference.objects.create(recipient=pref.recipient, channel=pref.channel, purpose=pref.purpose)


@pytest.mark.parametrize(
    "field,value",
    [("channel", "fax"), ("purpose", "spam"), ("status", "lost"), ("priority", 101)],
)
def test_message_values_are_checked_by_the_database(field, value):
    with pytest.raises(IntegrityError):
        MessageFactory(**{field: value})


def test_message_summary_is_one_line():
    message = MessageFactory.build(content={"subject": "Receipt", "body": "x" * 300})
    assert message.summary.startswith("Receipt — ")
    assert len(message.summary) == 120


def test_recent_history_query_uses_the_recipient_time_index():
    from django.db import connection

    from orchestrator.selectors import recipient_messages

    recipient = RecipientFactory()
    MessageFactory.create_batch(3, recipient=recipient)
    qs = recipient_messages(recipient=recipient, since=timezone.now() - timedelta(hours=24))
    with connection.cursor() as cursor:
        # A three-row table makes any plan cheap: take scans that ignore indexes off the table.
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_bitmapscan = off")
        plan = qs.explain()
        cursor.execute("RESET enable_seqscan")
        cursor.execute("RESET enable_bitmapscan")
    assert "Index Scan using message_recipient_time" in plan, plan
    assert "Sort" not in plan, plan
