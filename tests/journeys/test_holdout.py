"""Holdouts: a journey's (assigned at entry, no sends, still counted) and the global governor's; the
lift's interval against a hand computation."""

import hashlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction

from governor.holdout import holdout_assigned
from governor.models import GlobalHoldout
from governor.services import governor_check
from journeys.measurement import lift_estimate
from journeys.models import Enrollment, EnrollmentStatus, StepRun, StepRunStatus
from journeys.scheduler import HELD_OUT_DETAIL
from journeys.services import enrollment_create, enrollments_exit
from orchestrator.models import Message, MessageStatus, Source
from orchestrator.pipeline import message_send
from tests.journeys.factories import ConversionDefinitionFactory, active_journey, touch
from tests.orchestrator.factories import EventFactory, ReachableRecipientFactory

pytestmark = pytest.mark.django_db


def by_hand(scope: str, recipient_id: int, share: float) -> bool:
    """The assignment rule written out: the first 32 bits of md5("scope:id") as a fraction < share."""
    digest = hashlib.md5(f"{scope}:{recipient_id}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32 < share


def test_assignment_is_the_documented_hash_and_about_the_share():
    held = [holdout_assigned(scope="journey:7", recipient_id=i, share=Decimal("0.2")) for i in range(5000)]
    assert held == [by_hand("journey:7", i, 0.2) for i in range(5000)]
    assert 0.18 < sum(held) / len(held) < 0.22
    assert not any(holdout_assigned(scope="journey:7", recipient_id=i, share=0) for i in range(500))
    other = [holdout_assigned(scope="journey:8", recipient_id=i, share=Decimal("0.2")) for i in range(5000)]
    assert other != held, "each journey draws its own holdout"


def post_event(api, committed, recipient, name):
    response = committed(
        api.post, "/api/v1/events/", {"recipient": recipient.external_id, "name": name}, format="json"
    )
    assert response.status_code == 201, response.content


def test_held_out_entrants_get_no_sends_from_the_journey_but_count_in_its_report(api, clock, committed):
    journey = active_journey(holdout={"share": 0.5})
    recipients = [ReachableRecipientFactory(external_id=f"h-{n:02d}") for n in range(16)]
    for r in recipients:
        post_event(api, committed, r, "cart_abandoned")
    clock.advance(hours=2)
    committed(call_command, "orchestrate", "--once")
    for r in recipients:
        post_event(api, committed, r, "app_open")
    held = {e.recipient_id for e in Enrollment.objects.filter(journey=journey, held_out=True)}
    assert held == {r.pk for r in recipients if by_hand(f"journey:{journey.pk}", r.pk, 0.5)}
    assert 0 < len(held) < len(recipients)

    journey_sends = Message.objects.filter(source=Source.JOURNEY)
    assert not journey_sends.filter(recipient_id__in=held).exists()
    assert journey_sends.exclude(recipient_id__in=held).count() == 3 * (len(recipients) - len(held))
    skipped = StepRun.objects.filter(enrollment__recipient_id__in=held, step_type="send")
    assert skipped.count() == 3 * len(held)
    assert set(skipped.values_list("status", "detail")) == {(StepRunStatus.SKIPPED, HELD_OUT_DETAIL)}
    # They ran the journey all the same (waits and all) and finished it.
    assert set(Enrollment.objects.filter(recipient_id__in=held).values_list("status", flat=True)) == {
        "exited"
    }

    converter = next(r for r in recipients if r.pk in held)
    EventFactory(recipient=converter, name="purchase", occurred_at=clock.now)
    Enrollment.objects.filter(recipient=converter).update(
        status=EnrollmentStatus.CONVERTED, converted_at=clock.now
    )
    holdout = api.get(f"/api/v1/journeys/{journey.slug}/report/").json()["holdout"]
    assert (holdout["share"], holdout["held_out"], holdout["exposed"]) == (0.5, len(held), 16 - len(held))
    assert holdout["held_out_converted"] == 1 and holdout["exposed_converted"] == 0
    enrollment = api.get(
        f"/api/v1/journeys/{journey.slug}/enrollments/", {"recipient": converter.external_id}
    )
    assert enrollment.json()["results"][0]["held_out"] is True


def test_assignment_is_recorded_and_stable_across_re_entry(clock, committed):
    journey = active_journey(holdout={"share": 0.3})
    recipients = [ReachableRecipientFactory() for _ in range(12)]
    first = {}
    for r in recipients:
        e = committed(enrollment_create, journey=journey, recipient=r, now=clock.now)
        first[r.pk] = (e.held_out, e.holdout_share)
    enrollments_exit(journey=journey, reason="test", now=clock.now)
    clock.advance(days=2)  # past the re-entry cool-down
    for r in recipients:
        again = committed(enrollment_create, journey=journey, recipient=r, now=clock.now)
        assert (
            (again.held_out, again.holdout_share)
            == first[r.pk]
            == (
                by_hand(f"journey:{journey.pk}", r.pk, 0.3),
                Decimal("0.300"),
            )
        )
    assert {e.held_out for e in Enrollment.objects.filter(journey=journey)} == {True, False}


@pytest.mark.parametrize("share", [0.6, -0.1, "ten", True, {"share": 1}, {"share": None}])
def test_a_holdout_share_outside_0_to_50_percent_is_refused(api, share):
    from journeys.demo import cart_recovery_definition

    definition = {**cart_recovery_definition(), "slug": "held", "holdout": share}
    response = api.post("/api/v1/journeys/", definition, format="json")
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["holdout.share"]
    ok = api.post("/api/v1/journeys/", {**definition, "holdout": {"share": 0.5}}, format="json")
    assert ok.status_code == 201


# --- the lift ---------------------------------------------------------------------------------------


def test_the_interval_matches_a_hand_computation():
    # p1 = 120/1000 = 0.12, p2 = 90/1000 = 0.09, lift 0.03;
    # se = sqrt(0.12·0.88/1000 + 0.09·0.91/1000) = sqrt(0.0001875) = 0.0136931; 1.96·se = 0.0268384
    # relative: 0.12/0.09 - 1 = 0.3333; se(ln RR) = sqrt(1/120 - 1/1000 + 1/90 - 1/1000) = 0.1320774
    #   exp(ln(4/3) ± 1.96·0.1320774) - 1 = 0.0292 and 0.7273
    result = lift_estimate(exposed=1000, exposed_converted=120, held_out=1000, held_out_converted=90)
    assert (result["exposed_rate"], result["held_out_rate"]) == (0.12, 0.09)
    assert result["lift"] == 0.03 and result["ci95"] == [0.0032, 0.0568]
    assert result["relative_lift"] == 0.3333 and result["relative_ci95"] == [0.0292, 0.7273]
    assert result["verdict"] == "lift"
    assert result["summary"] == (
        "It lifts conversion: exposed convert at 12.0 %, held out at 9.0 % "
        "(+3.0 points, 95 % CI +0.3 to +5.7 points, +33.3 % relative)."
    )


def test_it_says_plainly_when_the_sample_is_too_small_or_the_interval_includes_zero():
    small = lift_estimate(exposed=40, exposed_converted=4, held_out=10, held_out_converted=0)
    assert small["verdict"] == "too_small" and small["summary"].startswith("Too small to tell")
    assert small["lift"] == 0.1 and small["relative_lift"] is None
    unclear = lift_estimate(exposed=1000, exposed_converted=100, held_out=1000, held_out_converted=95)
    assert unclear["verdict"] == "inconclusive" and unclear["ci95"][0] < 0 < unclear["ci95"][1]
    assert "the interval includes zero" in unclear["summary"]
    nobody = lift_estimate(exposed=10, exposed_converted=1, held_out=0, held_out_converted=0)
    assert nobody["verdict"] == "no_holdout" and nobody["lift"] is None
    zeros = lift_estimate(exposed=0, exposed_converted=0, held_out=0, held_out_converted=0)
    assert (zeros["exposed_rate"], zeros["held_out_rate"], zeros["lift"]) == (0.0, 0.0, None)


# --- the global governor's holdout -----------------------------------------------------------------


def test_the_global_holdout_suppresses_engagement_and_promotion_only(clock):
    GlobalHoldout.objects.create(pk=1, share=Decimal("0.5"))
    recipients = [ReachableRecipientFactory() for _ in range(12)]
    held = [r for r in recipients if by_hand("global", r.pk, 0.5)]
    free = [r for r in recipients if r not in held]
    assert held and free
    content = {"subject": "News", "body": "Something new."}
    for r in held:
        m = message_send(recipient=r, channel="email", purpose="engagement", content=content, at=clock.now)
        assert (m.status, m.rule) == (MessageStatus.SUPPRESSED, "global holdout")
        assert "global holdout (50 %" in m.reason
        receipt = message_send(
            recipient=r, channel="email", purpose="transactional", content=content, at=clock.now
        )
        assert receipt.status == MessageStatus.ACCEPTED
        check = governor_check(recipient=r, channel="email", purpose="promotional", at=clock.now)
        assert check.rule == "global holdout"
    for r in free:
        m = message_send(recipient=r, channel="email", purpose="engagement", content=content, at=clock.now)
        assert m.status == MessageStatus.ACCEPTED


def test_a_global_holdout_share_outside_0_to_50_percent_is_refused(admin_client):
    with pytest.raises(ValidationError):
        GlobalHoldout(pk=1, share=Decimal("0.6")).full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        GlobalHoldout.objects.create(pk=1, share=Decimal("0.9"))
    page = admin_client.post(
        "/admin/governor/globalholdout/add/", {"share": "0.7", "purposes": ["engagement"], "note": ""}
    )
    assert page.status_code == 200 and "less than or equal to 0.5" in page.content.decode()
    assert not GlobalHoldout.objects.exists()
    done = admin_client.post(
        "/admin/governor/globalholdout/add/", {"share": "0.1", "purposes": ["engagement", "promotional"]}
    )
    assert done.status_code == 302 and GlobalHoldout.objects.get().share == Decimal("0.1")
    assert admin_client.get("/admin/governor/globalholdout/").url == "/admin/governor/globalholdout/1/change/"


def test_the_overall_report_compares_the_global_holdout_with_everyone_else(api, clock):
    GlobalHoldout.objects.create(pk=1, share=Decimal("0.5"))
    ConversionDefinitionFactory(name="Purchase")
    recipients = [ReachableRecipientFactory(created_at=clock.now - timedelta(days=1)) for _ in range(10)]
    held = [r for r in recipients if by_hand("global", r.pk, 0.5)]
    converters = recipients[:4]
    for r in converters:
        touch(r, "email", clock.now)
        EventFactory(recipient=r, name="purchase", occurred_at=clock.now, properties={"amount": 5})
    from journeys.reports import overall_report, report_filters_parse

    report = overall_report(filters=report_filters_parse({"from": "2026-03-01", "to": "2026-03-31"}))
    h = report["holdout"]
    assert (h["share"], h["held_out"], h["exposed"]) == (0.5, len(held), 10 - len(held))
    assert h["held_out_converted"] == len([r for r in converters if r in held])
    assert h["exposed_converted"] == len([r for r in converters if r not in held])
