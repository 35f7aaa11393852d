"""Labels in the admin name recipients by their external id, not an internal number."""

import pytest

from .factories import EventFactory, MessageFactory, RecipientFactory

pytestmark = pytest.mark.django_db


def test_messages_and_events_are_labelled_with_the_recipients_external_id():
    ada = RecipientFactory(external_id="ada")
    message = MessageFactory(recipient=ada, channel="push", purpose="engagement", status="sent")
    assert str(message) == f"#{message.pk} push/engagement to ada: sent"
    assert str(EventFactory(recipient=ada, name="purchase")).startswith("purchase by ada at ")
