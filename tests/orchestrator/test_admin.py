from datetime import timedelta

import pytest
from django.utils import timezone

from .factories import EventFactory, MessageFactory, RecipientFactory

pytestmark = pytest.mark.django_db


def test_recipient_page_shows_the_cross_channel_timeline(admin_client):
    recipient = RecipientFactory(external_id="adm1", timezone="Asia/Tokyo")
    now = timezone.now()
    MessageFactory(
        recipient=recipient,
        channel="push",
        content={"title": "Cart saved", "body": "b"},
        created_at=now - timedelta(hours=2),
    )
    MessageFactory(
        recipient=recipient,
        status="suppressed",
        accepted_at=None,
        rule="Daily cap",
        reason="3 of 3 in the last 24 h",
        created_at=now - timedelta(hours=1),
    )
    EventFactory(recipient=recipient, name="purchase", occurred_at=now - timedelta(minutes=90))
    resp = admin_client.get(f"/admin/orchestrator/recipient/{recipient.pk}/change/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "Timeline" in html and "Cart saved" in html and "purchase" in html
    assert "3 of 3 in the last 24 h" in html
    # The governor's view of the day: what it cleared, apart from what it stopped (issue 15).
    assert "Last 24 h: 1 message cleared" in html and "1 suppressed" in html
    assert html.index("3 of 3") < html.index("purchase") < html.index("Cart saved")


def test_message_admin_is_read_only_and_filterable(admin_client):
    message = MessageFactory()
    listing = admin_client.get(
        "/admin/orchestrator/message/", {"channel__exact": "email", "status__exact": "accepted"}
    )
    assert listing.status_code == 200
    assert str(message.pk) in listing.content.decode()
    assert admin_client.get("/admin/orchestrator/message/add/").status_code == 403
    detail = admin_client.get(f"/admin/orchestrator/message/{message.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content


def test_recipient_search_by_email(admin_client):
    from .factories import ContactPointFactory

    cp = ContactPointFactory(address="findme@example.com")
    resp = admin_client.get("/admin/orchestrator/recipient/", {"q": "findme@"})
    assert cp.recipient.external_id in resp.content.decode()


def test_a_messages_decisions_show_on_its_page_and_in_the_timeline(admin_client):
    from datetime import UTC, datetime

    from governor.redrive import deferred_redrive
    from orchestrator.pipeline import message_send

    from .factories import ReachableRecipientFactory

    r = ReachableRecipientFactory()
    noon = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    email = {"subject": "s", "body": "b"}
    for n in range(3):
        message_send(
            recipient=r,
            channel="email",
            purpose="engagement",
            content=email,
            at=noon - timedelta(hours=23 - n),
        )
    m = message_send(recipient=r, channel="email", purpose="engagement", content=email, at=noon)
    deferred_redrive(now=noon + timedelta(hours=1), limit=10)
    page = admin_client.get(f"/admin/orchestrator/message/{m.pk}/change/").content.decode()
    assert "Decisions (the first, then every re-drive)" in page
    assert "3 of 3 in 24 h" in page and page.index(">deferred<") < page.index(">accepted<")
    timeline = admin_client.get(f"/admin/orchestrator/recipient/{r.pk}/change/").content.decode()
    assert "2 decisions" in timeline
