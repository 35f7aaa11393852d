"""The recipient page: the conversation first, filtered by channel, status and date; journey moments; the
auto channel's reason; the last 24 h as the governor counts it; long event properties truncated."""

from datetime import timedelta

import pytest
from django.utils import timezone

from journeys.models import EnrollmentStatus
from tests.journeys.factories import EnrollmentFactory

from .factories import EventFactory, MessageFactory, RecipientFactory

pytestmark = pytest.mark.django_db


def page(admin_client, recipient, **query) -> str:
    resp = admin_client.get(f"/admin/orchestrator/recipient/{recipient.pk}/change/", query)
    assert resp.status_code == 200
    return resp.content.decode()


def timeline(html: str) -> str:
    return html[html.index('id="timeline"') : html.index('id="profile"')]


@pytest.fixture
def ada():
    ada = RecipientFactory(external_id="ada")
    now = timezone.now()
    MessageFactory(
        recipient=ada, channel="push", content={"title": "Push one"}, created_at=now - timedelta(hours=1)
    )
    MessageFactory(
        recipient=ada,
        channel="email",
        content={"subject": "Email held"},
        status="deferred",
        accepted_at=None,
        created_at=now - timedelta(hours=2),
    )
    MessageFactory(
        recipient=ada,
        channel="email",
        content={"subject": "Email stopped"},
        status="suppressed",
        accepted_at=None,
        created_at=now - timedelta(hours=3),
    )
    MessageFactory(
        recipient=ada, channel="sms", content={"body": "Old SMS"}, created_at=now - timedelta(days=10)
    )
    EventFactory(recipient=ada, name="purchase", occurred_at=now - timedelta(minutes=30))
    return ada


def test_the_conversation_comes_before_the_edit_form(admin_client, ada):
    html = page(admin_client, ada)
    assert html.index('id="timeline"') < html.index('id="recipient_form"')


def test_the_last_24_h_counts_cleared_messages_with_held_and_suppressed_apart(admin_client, ada):
    html = page(admin_client, ada)
    assert "Last 24 h: 1 message cleared" in html
    assert "1 held" in html and "1 suppressed" in html and "push × 1" in html


def test_filter_by_channel_status_and_date(admin_client, ada):
    only_email = timeline(page(admin_client, ada, channel="email"))
    assert "Email held" in only_email and "Email stopped" in only_email
    assert "Push one" not in only_email and "purchase" not in only_email  # events have no channel
    held = timeline(page(admin_client, ada, channel="email", status="deferred"))
    assert "Email held" in held and "Email stopped" not in held
    old_day = (timezone.now() - timedelta(days=10)).date().isoformat()
    that_day = timeline(page(admin_client, ada, since=old_day, until=old_day))
    assert "Old SMS" in that_day and "Push one" not in that_day


def test_bad_filters_name_the_field_and_show_everything(admin_client, ada):
    html = page(admin_client, ada, channel="fax", since="yesterday")
    assert "channel: expected one of email, push, sms, in_app." in html
    assert "since: expected a date like 2026-03-01" in html
    assert "Push one" in timeline(html) and "Old SMS" in timeline(html)


def test_a_2_mb_event_is_truncated_with_a_link_to_the_full_event(admin_client, ada):
    big = EventFactory(recipient=ada, name="cart_synced", properties={"blob": "x" * 2_000_000})
    html = page(admin_client, ada)
    assert len(html) < 200_000
    assert "cart_synced" in html
    assert f'href="/admin/orchestrator/event/{big.pk}/change/"' in html and "the full event (1.9" in html
    small = timeline(html)
    assert '{"source"' not in small or "the full event" in small


def test_journey_enrollments_and_exits_are_in_the_timeline(admin_client, ada):
    now = timezone.now()
    EnrollmentFactory(
        recipient=ada,
        version__journey__name="Cart recovery",
        entered_at=now - timedelta(hours=5),
        status=EnrollmentStatus.CONVERTED,
        ended_at=now - timedelta(hours=4),
        exit_reason="goal purchase reached",
    )
    html = timeline(page(admin_client, ada))
    assert "Entered the journey Cart recovery" in html
    assert "Converted in the journey Cart recovery: goal purchase reached" in html
    assert html.index("Converted in the journey") < html.index("Entered the journey")  # newest first


def test_the_auto_channel_shows_why_it_was_chosen(admin_client, ada):
    MessageFactory(
        recipient=ada,
        channel="push",
        requested_channel="auto",
        channel_reason="push: opened 4 of the last 5; email: opted out",
        content={"title": "Chosen"},
    )
    html = timeline(page(admin_client, ada))
    assert "Channel chosen by auto: push: opened 4 of the last 5; email: opted out" in html
    assert 'class="orch-chip orch-auto"' in html
