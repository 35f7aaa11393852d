"""The whole loop in a real browser: a promotional email delivered to a real SMTP server on loopback
carries List-Unsubscribe; the recipient opens that link, unsubscribes from promotional email; the next
promotional email is suppressed with the reason, while a transactional one still goes."""

import email
import re
import time

import pytest

from orchestrator.models import ChangeSource, PreferenceChange
from orchestrator.pipeline import message_send
from tests.browser import admin_login, browser_page, screenshot  # noqa: F401
from tests.channels_app.servers import smtp_server
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROMO = {"subject": "New this week", "body": "A few things we think you will like."}
RECEIPT = {"subject": "Your receipt", "body": "Thanks for your order."}


def delivered(handler, n: int, timeout: float = 10.0) -> list[email.message.Message]:
    deadline = time.monotonic() + timeout
    while len(handler.envelopes) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return [email.message_from_bytes(e.original_content or e.content) for e in handler.envelopes]


def test_unsubscribe_from_the_delivered_emails_header_suppresses_the_next_promotion_only(
    browser_page,  # noqa: F811
    live_server,
    settings,
    django_user_model,
):
    page = browser_page
    settings.PUBLIC_BASE_URL = live_server.url
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    django_user_model.objects.create_superuser("team", "team@example.com", "team-pass-123")
    with smtp_server() as (controller, handler):
        settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
        r = ReachableRecipientFactory(external_id="reader-rita", timezone="UTC")
        first = message_send(recipient=r, channel="email", purpose="promotional", content=PROMO)
        [mail] = delivered(handler, 1)
        assert mail["Subject"] == "New this week"
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        header = mail["List-Unsubscribe"]
        link = re.search(r"<(http[^>]+)>", header).group(1)
        assert re.search(r"<mailto:unsubscribe@[^>]+>", header)
        assert link.startswith(f"{live_server.url}/preferences/")

        page.goto(link)  # what a mail client shows when it opens the List-Unsubscribe URL
        page.wait_for_selector("#oneclick")
        assert "news and offers by email" in page.locator("#oneclick").inner_text()
        screenshot(page, "preferences-one-click")
        with page.expect_navigation():
            page.click("#oneclick")
        assert "no longer get news and offers by email" in page.locator("#done").inner_text()
        promo_row = page.locator("#channel-email li[data-purpose=promotional]")
        assert "Off" in promo_row.inner_text() and "Resubscribe" in promo_row.inner_text()
        screenshot(page, "preferences-after-unsubscribe")

        change = PreferenceChange.objects.get()
        assert (change.source, change.message_id, change.purpose) == (
            ChangeSource.LINK,
            first.pk,
            "promotional",
        )

        second = message_send(recipient=r, channel="email", purpose="promotional", content=PROMO)
        receipt = message_send(recipient=r, channel="email", purpose="transactional", content=RECEIPT)
        mails = delivered(handler, 2)
        assert (
            second.status == "suppressed"
            and second.reason == "The recipient opted out of promotional messages on email."
        )
        assert [m["Subject"] for m in mails] == ["New this week", "Your receipt"]
        assert mails[1]["List-Unsubscribe"] is None  # receipts carry no unsubscribe
        receipt.refresh_from_db()
        assert receipt.status == "sent"

    # The team sees the same on the recipient's timeline.
    admin_login(page, live_server, "team", "team-pass-123")
    page.goto(f"{live_server.url}/admin/orchestrator/recipient/{r.pk}/change/")
    timeline = page.locator(".orch-timeline").inner_text()
    assert "opted out of promotional messages on email" in timeline
    screenshot(page, "timeline-after-unsubscribe")
