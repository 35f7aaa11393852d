"""A messaging team's campaign in a real browser: build a segment and see its count, write a template
with two locales and preview it for a pt-BR recipient, schedule a campaign and watch its progress."""

from datetime import timedelta

import pytest
from django.utils import timezone

from journeys.campaigns import campaigns_advance
from journeys.models import Campaign, CampaignStatus
from orchestrator.models import Message, Source
from tests.browser import admin_login, browser_page, screenshot  # noqa: F401
from tests.orchestrator.factories import ContactPointFactory, RecipientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def team(django_user_model):
    return django_user_model.objects.create_superuser("team", "team@example.com", "team-pass-123")


@pytest.fixture
def people():
    for external_id, locale, plan, name in [
        ("ana", "pt-BR", "pro", "Ana"),
        ("bea", "pt-BR", "pro", "Bea"),
        ("cal", "en-US", "pro", "Cal"),
        ("dan", "en-US", "free", "Dan"),
    ]:
        r = RecipientFactory(external_id=external_id, locale=locale, attributes={"plan": plan, "name": name})
        ContactPointFactory(recipient=r)


def test_segment_template_and_campaign_from_the_admin(browser_page, live_server, team, people):  # noqa: F811
    page = browser_page
    admin_login(page, live_server, "team", "team-pass-123")

    # 1. A segment: plan is pro, reachable by email — the count follows the edits.
    page.goto(f"{live_server.url}/admin/orchestrator/segment/add/")
    page.fill("#id_name", "Pro on email")
    page.click("#segment-add")
    row = page.locator("#segment-rows tr").nth(0)
    row.locator('[data-name="attribute"]').fill("plan")
    row.locator('[data-name="value"]').fill("pro")
    page.wait_for_function("document.getElementById('segment-count').textContent === '3'")
    page.click("#segment-add")
    second = page.locator("#segment-rows tr").nth(1)
    second.locator('[data-name="kind"]').select_option("reachable")
    page.locator("#segment-rows tr").nth(1).locator('[data-name="value"]').fill("email")
    page.wait_for_function(
        "document.getElementById('segment-summary').textContent.includes('reachable on email')"
    )
    assert page.inner_text("#segment-count") == "3"
    assert "plan is pro and reachable on email" in page.inner_text("#segment-summary")
    assert "ana" in page.inner_text("#segment-sample")
    screenshot(page, "segment-builder")
    page.click("input[name=_save]")
    page.wait_for_selector("text=Pro on email")

    # 2. A template with an English and a Brazilian Portuguese variant, previewed for ana (pt-BR).
    page.goto(f"{live_server.url}/admin/channels_app/messagetemplate/add/")
    page.fill("#id_key", "spring")
    page.select_option("#id_channel", "email")
    page.select_option("#id_purpose", "promotional")
    page.fill("#id_default_locale", "en")
    page.fill("#id_variants-0-locale", "en")
    page.fill("#id_variants-0-subject", "Spring is here, {{ recipient.attributes.name | default: 'friend' }}")
    page.fill("#id_variants-0-body", "New this season for your {{ recipient.attributes.plan }} plan.")
    page.click("#variants-group .add-row a")
    page.fill("#id_variants-1-locale", "pt-BR")
    page.fill(
        "#id_variants-1-subject", "A primavera chegou, {{ recipient.attributes.name | default: 'amigo' }}"
    )
    page.fill("#id_variants-1-body", "Novidades da estação para o seu plano {{ recipient.attributes.plan }}.")
    page.click("input[name=_continue]")
    page.wait_for_selector("#template-preview")
    page.fill("#preview-recipient", "ana")
    page.click("#preview-run")
    page.wait_for_selector(".orch-preview-subject")
    assert "pt-BR variant" in page.inner_text(".orch-preview-locale")
    assert page.inner_text(".orch-preview-subject") == "A primavera chegou, Ana"
    screenshot(page, "template-preview-pt-br")

    # 3. A campaign to the segment with the template, throttled, proposed, approved: it starts sending.
    page.goto(f"{live_server.url}/admin/journeys/campaign/add/")
    page.fill("#id_name", "Spring")
    page.select_option("#id_segment", label="Pro on email")
    page.select_option("#id_channel", "email")
    page.select_option("#id_purpose", "promotional")
    page.select_option("#id_template", "spring")
    page.fill("#id_throttle_per_minute", "2")
    page.click("input[name=_continue]")
    page.wait_for_selector("#lifecycle")
    with page.expect_navigation():
        page.locator("#lifecycle input[value=Propose]").click()
    with page.expect_navigation():
        page.locator("#lifecycle input[value=Approve]").click()
    campaign = Campaign.objects.get(name="Spring")
    # Approval kicks the sending task (run inline in tests): two this minute, the third waits.
    page.reload()
    page.wait_for_selector("#progress")
    assert campaign.__class__.objects.get(pk=campaign.pk).status == CampaignStatus.SENDING
    assert page.inner_text('[data-key="undecided"]') == "1"
    assert page.inner_text('[data-key="decided"]') == "2"
    screenshot(page, "campaign-sending")

    # A minute later the due work sends the last one; the page follows on its own.
    campaigns_advance(now=timezone.now() + timedelta(minutes=1, seconds=5))
    page.wait_for_function(
        "document.querySelector('#lifecycle h2').textContent.includes('done')", timeout=15_000
    )
    assert page.inner_text('[data-key="decided"]') == "3"
    assert "accepted" in page.inner_text("#progress") or "sent" in page.inner_text("#progress")
    screenshot(page, "campaign-done")
    subjects = sorted(
        m.content["subject"] for m in Message.objects.filter(source=Source.CAMPAIGN).order_by("recipient_id")
    )
    assert subjects == ["A primavera chegou, Ana", "A primavera chegou, Bea", "Spring is here, Cal"]
