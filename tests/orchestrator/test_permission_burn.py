"""The permission-burn monitor: opt-outs per week by channel, purpose and source next to the volume and
lint warnings; a journey whose audience opts out at twice its channel's rate is flagged on its page.
Also: preference changes made through the API and the admin are recorded with their source."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from orchestrator.admin import permission_burn_context
from orchestrator.consent import consent_burn_by_source_ref, consent_burn_weekly
from orchestrator.models import ChangeKind, ChangeSource, PreferenceChange
from tests.journeys.factories import JourneyFactory

from .factories import MessageFactory, ReachableRecipientFactory

pytestmark = pytest.mark.django_db


def sent(n, *, channel="email", source_ref="", at, warnings=()):
    out = []
    for _ in range(n):
        r = ReachableRecipientFactory()
        out.append(
            MessageFactory(
                recipient=r,
                channel=channel,
                status="sent",
                sent_at=at,
                created_at=at,
                source_ref=source_ref,
                warnings=list(warnings),
            )
        )
    return out


def lost(message, *, kind=ChangeKind.UNSUBSCRIBE, source=ChangeSource.LINK, at, purpose="promotional"):
    return PreferenceChange.objects.create(
        recipient=message.recipient,
        channel=message.channel,
        purpose=purpose,
        kind=kind,
        opted_in=False,
        source=source,
        message=message,
        created_at=at,
    )


def test_weekly_burn_counts_by_kind_channel_purpose_and_source_next_to_volume():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday: both weeks are whole
    this_week, last_week = now - timedelta(hours=1), now - timedelta(days=7)
    msgs = sent(10, at=this_week, warnings=[{"code": "x", "detail": "y"}]) + sent(5, at=last_week)
    lost(msgs[0], at=this_week)
    lost(msgs[1], at=this_week, kind=ChangeKind.COMPLAINT, source=ChangeSource.PROVIDER, purpose="")
    lost(msgs[10], at=last_week)
    PreferenceChange.objects.create(  # a resubscribe is no burn
        recipient=msgs[2].recipient,
        channel="email",
        kind=ChangeKind.RESUBSCRIBE,
        opted_in=True,
        source="link",
        created_at=this_week,
    )
    data = consent_burn_weekly(since=now - timedelta(weeks=3), until=now)
    burn = sorted((r.week, r.kind, r.source, r.purpose, r.count) for r in data["burn"])
    assert [b[1:] for b in burn] == [
        ("unsubscribe", "link", "promotional", 1),
        ("complaint", "provider", "", 1),
        ("unsubscribe", "link", "promotional", 1),
    ]
    assert burn[0][0] < burn[1][0] == burn[2][0] and burn[1][0].weekday() == 0
    volumes = sorted(data["volume"].items())
    assert [v["sent"] for _, v in volumes] == [5, 10] and [v["warned"] for _, v in volumes] == [0, 10]


def test_a_journey_opting_out_at_twice_the_channels_rate_is_flagged(admin_client):
    now = timezone.now()
    at = now - timedelta(days=1)
    journey = JourneyFactory(slug="spring-blast")
    noisy = sent(10, source_ref="spring-blast · detail", at=at)
    calm = sent(90, source_ref="", at=at)
    for m in noisy[:4]:
        lost(m, at=at)
    lost(calm[0], at=at)
    [rate] = consent_burn_by_source_ref(
        since=now - timedelta(days=28), until=now, source_refs=["spring-blast"]
    )
    assert (rate.sent, rate.lost, rate.rate) == (10, 4, 0.4)
    assert rate.channel_rate == pytest.approx(5 / 100) and rate.flagged
    page = admin_client.get(f"/admin/journeys/journey/{journey.pk}/change/")
    assert "opts out at ≥ 2× the channel" in page.content.decode()


def test_a_journey_at_its_channels_usual_rate_is_not_flagged():
    now = timezone.now()
    at = now - timedelta(days=1)
    journey_msgs = sent(50, source_ref="calm · a", at=at)
    others = sent(50, at=at)
    for m in journey_msgs[:3] + others[:3]:
        lost(m, at=at)
    [rate] = consent_burn_by_source_ref(since=now - timedelta(days=28), until=now, source_refs=["calm"])
    assert not rate.flagged


def test_the_monitor_page_renders_the_chart_and_the_table(admin_client):
    now = timezone.now()
    msgs = sent(3, at=now - timedelta(hours=2))
    lost(msgs[0], at=now - timedelta(hours=1), kind=ChangeKind.STOP, source=ChangeSource.PROVIDER)
    page = admin_client.get("/admin/orchestrator/permissionburn/")
    text = page.content.decode()
    assert page.status_code == 200 and 'id="burn-chart"' in text and "vendor/chart.umd.js" in text
    context = permission_burn_context(now=now)
    stops = context["chart"]["datasets"][context["kinds"].index("SMS STOP")]["data"]
    assert sum(stops) == 1 and context["rows"][0]["source"].startswith("Provider")
    assert admin_client.get("/admin/orchestrator/permissionburn/?weeks=abc").status_code == 200


def test_api_preference_changes_are_recorded_with_source_api(api):
    r = ReachableRecipientFactory()
    answer = api.patch(
        f"/api/v1/recipients/{r.external_id}/",
        {"preferences": {"email": {"promotional": False, "engagement": True}}},
        format="json",
    )
    assert answer.status_code == 200
    change = PreferenceChange.objects.get()
    assert (change.channel, change.purpose, change.kind, change.source) == (
        "email",
        "promotional",
        "unsubscribe",
        "api",
    )
    api.patch(
        f"/api/v1/recipients/{r.external_id}/",
        {"preferences": {"email": {"promotional": False}}},
        format="json",
    )
    assert PreferenceChange.objects.count() == 1  # repeating it changes nothing


def test_admin_preference_edits_are_recorded_with_source_admin(admin_client):
    r = ReachableRecipientFactory()
    url = f"/admin/orchestrator/recipient/{r.pk}/change/"
    page = admin_client.get(url)
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and not isinstance(v, dict)}
    data["attributes"] = "{}"
    for formset in page.context["inline_admin_formsets"]:
        fs = formset.formset
        data.update(
            {
                f"{fs.prefix}-TOTAL_FORMS": str(len(fs.forms) + (1 if fs.prefix == "preferences" else 0)),
                f"{fs.prefix}-INITIAL_FORMS": str(len(fs.forms)),
            }
        )
        for i, f in enumerate(fs.forms):
            for name, value in f.initial.items():
                if value is not None:
                    data[f"{fs.prefix}-{i}-{name}"] = value
            data[f"{fs.prefix}-{i}-id"] = f.instance.pk
            data[f"{fs.prefix}-{i}-recipient"] = r.pk
            if name := (
                "opted_in" if fs.prefix == "contact_points" and f.instance.channel == "sms" else None
            ):
                data[f"{fs.prefix}-{i}-{name}"] = ""  # unchecked: opted out
            elif fs.prefix == "contact_points":
                data[f"{fs.prefix}-{i}-opted_in"] = "on"
        if fs.prefix == "preferences":
            n = len(fs.forms)
            data.update(
                {
                    f"preferences-{n}-channel": "push",
                    f"preferences-{n}-purpose": "engagement",
                    f"preferences-{n}-recipient": r.pk,
                }
            )
    answer = admin_client.post(url, data)
    assert answer.status_code == 302, answer.context["errors"] if answer.context else answer
    changes = set(PreferenceChange.objects.values_list("channel", "purpose", "kind", "source"))
    assert changes == {("push", "engagement", "unsubscribe", "admin"), ("sms", "", "unsubscribe", "admin")}
