"""The five attribution models against a fixture computed by hand, to the decimal.

Conversions at T (each its own definition, so each case can be read alone; all together for the totals),
half-life one day, lookback seven days:

  single  email T-1d                                   amount 100
  repeat  push T-3d, email T-2d, push T-1d             amount 60   (a channel twice)
  tie     email and push both T-1d, in-app at T        amount 40   (a tie, and a touch at the instant)
  window  email T-8d (outside), push T-6d, email T+1h  no amount   (outside the window either side)
  none    push only `sent` (never reached) T-1h        amount 10   (a conversion with no touch)

Time decay weighs a touch 0.5^(days before the last touch): repeat → push 0.25 + 1, email 0.5 (of 1.75).
Position-based: 40 % first, 40 % last, 20 % middle; two positions split 50/50; an instant is a position.
"""

from datetime import UTC, datetime, timedelta

import pytest

from journeys.models import EnrollmentStatus, StepRunStatus
from orchestrator.models import MessageStatus
from tests.journeys.factories import (
    ConversionDefinitionFactory,
    EnrollmentFactory,
    StepRunFactory,
    active_journey,
    touch,
)
from tests.orchestrator.factories import EventFactory, RecipientFactory

pytestmark = pytest.mark.django_db

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
D = timedelta(days=1)
MODELS = ("first", "last", "linear", "time_decay", "position_based")


def buy(recipient, name, amount=None, at=T):
    return EventFactory(
        recipient=recipient,
        name=name,
        occurred_at=at,
        properties={} if amount is None else {"amount": amount},
    )


@pytest.fixture
def fixture_world():
    cases = {}
    for name in ("single", "repeat", "tie", "window", "none"):
        ConversionDefinitionFactory(name=name, event=f"buy_{name}")
        cases[name] = RecipientFactory(external_id=f"r-{name}")
    r = cases
    touch(r["single"], "email", T - D)
    buy(r["single"], "buy_single", 100)

    touch(r["repeat"], "push", T - 3 * D)
    touch(r["repeat"], "email", T - 2 * D)
    touch(r["repeat"], "push", T - D)
    buy(r["repeat"], "buy_repeat", 60)

    touch(r["tie"], "email", T - D)
    touch(r["tie"], "push", T - D)
    touch(r["tie"], "in_app", T)
    buy(r["tie"], "buy_tie", "40")  # a number written as text still counts as the value

    touch(r["window"], "email", T - 8 * D)
    touch(r["window"], "push", T - 6 * D)
    touch(r["window"], "email", T + timedelta(hours=1))
    touch(r["window"], "sms", T - D, status=MessageStatus.SUPPRESSED)
    buy(r["window"], "buy_window")

    touch(r["none"], "push", T - timedelta(hours=1), status=MessageStatus.SENT)
    buy(r["none"], "buy_none", 10)
    return r


def attribution(api, **params):
    response = api.get("/api/v1/reports/attribution/", {"from": "2026-03-01", "to": "2026-03-31", **params})
    assert response.status_code == 200, response.content
    return response.json()


def credit(body):
    return {m: body[m] for m in MODELS}


def test_a_single_touch_takes_all_the_credit_in_every_model(api, fixture_world):
    body = attribution(api, conversion="single", half_life="P1D")
    assert credit(body) == {m: {"email": 1.0} for m in MODELS}
    assert body["value_credit"] == {m: {"email": 100.0} for m in MODELS}
    assert (body["conversions"], body["attributed"], body["value"]) == (1, 1, 100.0)


def test_a_repeated_channel_collects_each_of_its_touches(api, fixture_world):
    body = attribution(api, conversion="repeat", half_life="P1D")
    assert credit(body) == {
        "first": {"push": 1.0},
        "last": {"push": 1.0},
        "linear": {"email": 0.3333, "push": 0.6667},
        "time_decay": {"email": 0.2857, "push": 0.7143},  # 0.5 / 1.75 and 1.25 / 1.75
        "position_based": {"email": 0.2, "push": 0.8},
    }
    assert body["value_credit"] == {
        "first": {"push": 60.0},
        "last": {"push": 60.0},
        "linear": {"email": 20.0, "push": 40.0},
        "time_decay": {"email": 17.14, "push": 42.86},
        "position_based": {"email": 12.0, "push": 48.0},
    }


def test_touches_at_the_same_instant_share_their_position(api, fixture_world):
    body = attribution(api, conversion="tie", half_life="P1D")
    assert credit(body) == {
        "first": {"email": 0.5, "push": 0.5},
        "last": {"in_app": 1.0},
        "linear": {"email": 0.3333, "in_app": 0.3333, "push": 0.3333},
        "time_decay": {"email": 0.25, "in_app": 0.5, "push": 0.25},
        "position_based": {"email": 0.25, "in_app": 0.5, "push": 0.25},  # two positions: 50/50
    }
    assert body["value_credit"]["time_decay"] == {"email": 10.0, "in_app": 20.0, "push": 10.0}


def test_touches_outside_the_lookback_window_or_after_the_conversion_get_nothing(api, fixture_world):
    body = attribution(api, conversion="window", half_life="P1D")
    assert credit(body) == {m: {"push": 1.0} for m in MODELS}
    assert body["value_credit"] == {m: {} for m in MODELS}  # no value property on the event
    assert body["by_channel"][0]["touches"] == 1


def test_a_conversion_with_no_touch_is_counted_but_not_attributed(api, fixture_world):
    body = attribution(api, conversion="none", half_life="P1D")
    assert (body["conversions"], body["attributed"], body["unattributed"]) == (1, 0, 1)
    assert (body["value"], body["attributed_value"]) == (10.0, 0.0)
    assert credit(body) == {m: {} for m in MODELS}
    # With `sent` counted as reaching the recipient, the push becomes its only touch.
    reached = attribution(api, conversion="none", half_life="P1D", reached="sent,delivered,opened,clicked")
    assert credit(reached) == {m: {"push": 1.0} for m in MODELS}


def test_every_model_side_by_side_over_all_conversions(api, fixture_world):
    body = attribution(api, half_life="P1D")
    assert (body["conversions"], body["attributed"], body["unattributed"]) == (5, 4, 1)
    assert (body["value"], body["attributed_value"]) == (210.0, 200.0)
    assert credit(body) == {
        "first": {"email": 1.5, "push": 2.5},
        "last": {"email": 1.0, "in_app": 1.0, "push": 2.0},
        "linear": {"email": 1.6667, "in_app": 0.3333, "push": 2.0},
        "time_decay": {"email": 1.5357, "in_app": 0.5, "push": 1.9643},
        "position_based": {"email": 1.45, "in_app": 0.5, "push": 2.05},
    }
    assert body["value_credit"] == {
        "first": {"email": 120.0, "push": 80.0},
        "last": {"email": 100.0, "in_app": 40.0, "push": 60.0},
        "linear": {"email": 133.33, "in_app": 13.33, "push": 53.33},
        "time_decay": {"email": 127.14, "in_app": 20.0, "push": 52.86},
        "position_based": {"email": 122.0, "in_app": 20.0, "push": 58.0},
    }
    for model in MODELS:  # every model hands out exactly one credit per attributed conversion
        assert sum(body[model].values()) == pytest.approx(4)
    # Messages outside journeys are credited by their source.
    assert [(row["journey"], row["source"], row["linear"]) for row in body["by_journey"]] == [
        (None, "api", 4.0)
    ]
    # Plain words for what last touch misses (push: last 50 %, linear 50 %; email 25 % vs 42 %).
    assert "Last touch gives email 25 % of the credit; linear gives it 42 %" in body["insights"][0]
    assert "under-credits email by 17 points" in body["insights"][0]


def test_the_half_life_changes_only_time_decay(api, fixture_world):
    slow = attribution(api, conversion="repeat", half_life="P2D")
    # Weights 0.5^(2/2), 0.5^(1/2), 1 → 0.5 + 1 for push, 0.7071 for email (of 2.2071).
    assert slow["time_decay"] == {"email": 0.3204, "push": 0.6796}
    assert slow["linear"] == {"email": 0.3333, "push": 0.6667}
    assert attribution(api, conversion="repeat", half_life="2")["time_decay"] == slow["time_decay"]


def test_a_property_filter_keeps_only_matching_events(api):
    ConversionDefinitionFactory(name="pro upgrade", event="upgrade", property_filter={"plan": "pro"})
    pro, free = RecipientFactory(), RecipientFactory()
    for r, plan in ((pro, "pro"), (free, "free")):
        touch(r, "email", T - D)
        EventFactory(recipient=r, name="upgrade", occurred_at=T, properties={"plan": plan, "amount": 9})
    body = attribution(api, conversion="pro upgrade")
    assert (body["conversions"], body["value"], body["linear"]) == (1, 9.0, {"email": 1.0})


def test_the_date_range_takes_conversions_by_their_time(api, fixture_world):
    assert attribution(api, half_life="P1D", **{"from": "2026-03-11"})["conversions"] == 0
    assert attribution(api, half_life="P1D", to="2026-03-10")["conversions"] == 5  # `to` includes its day
    assert (
        attribution(api, half_life="P1D", to="2026-03-10T12:00:00Z")["conversions"] == 0
    )  # a moment: excluded


def test_a_model_filter_returns_only_those_models(api, fixture_world):
    body = attribution(api, model="last,linear")
    assert "last" in body and "linear" in body and "first" not in body and "time_decay" not in body
    assert set(body["value_credit"]) == {"last", "linear"}


# --- a journey's goal conversions ---------------------------------------------------------------------


@pytest.fixture
def journey_world():
    """Cart recovery with a goal value; five entrants (see each)."""
    from journeys.demo import cart_recovery_definition

    definition = cart_recovery_definition()
    definition["goal"]["value_property"] = "amount"
    journey = active_journey(definition, holdout={"share": 0.5})
    version = journey.live_version

    def entrant(name, *, entered, status=EnrollmentStatus.CONVERTED, held_out=False, converted_at=T):
        recipient = RecipientFactory(external_id=name)
        return EnrollmentFactory(
            journey=journey,
            version=version,
            recipient=recipient,
            status=status,
            entered_at=entered,
            ended_at=converted_at if status != EnrollmentStatus.ACTIVE else None,
            converted_at=converted_at if status == EnrollmentStatus.CONVERTED else None,
            held_out=held_out,
            holdout_share="0.5",
        )

    def sent(enrollment, step, channel, at, seq, status=MessageStatus.DELIVERED):
        message = touch(enrollment.recipient, channel, at, status=status, source="journey")
        StepRunFactory(
            enrollment=enrollment, seq=seq, step_id=step, status=StepRunStatus.SENT, message=message
        )

    e1 = entrant("e1", entered=T - 2 * D)  # push then email, converts at T for 50
    sent(e1, "nudge", "push", T - 2 * D, 0)
    sent(e1, "detail", "email", T - D, 2)
    buy(e1.recipient, "purchase", 50)
    e2 = entrant("e2", entered=T - D)  # push reached; the email was only sent: one touch, 20
    sent(e2, "nudge", "push", T - D, 0)
    sent(e2, "detail", "email", T - timedelta(hours=2), 2, status=MessageStatus.SENT)
    buy(e2.recipient, "purchase", 20)
    e3 = entrant("e3", entered=T - timedelta(hours=2))  # the in-app prompt came after the purchase
    sent(e3, "nudge", "push", T - timedelta(hours=1), 0)
    sent(e3, "prompt", "in_app", T + timedelta(hours=1), 4)
    buy(e3.recipient, "purchase")
    e4 = entrant("e4", entered=T - D, status=EnrollmentStatus.EXITED)  # reached, never converted
    sent(e4, "nudge", "push", T - D, 0)
    entrant("e5", entered=T - timedelta(hours=3), held_out=True)  # held out: no sends, converted
    return journey


def test_a_journey_report_credits_its_steps_under_every_model(api, journey_world):
    report = api.get(
        f"/api/v1/journeys/{journey_world.slug}/report/", {"from": "2026-03-01", "half_life": "P1D"}
    ).json()
    a = report["attribution"]
    assert (a["conversions"], a["attributed"], a["unattributed"], a["value"]) == (4, 3, 1, 70.0)
    assert credit(a) == {
        "first": {"push": 3.0},
        "last": {"email": 1.0, "push": 2.0},
        "linear": {"email": 0.5, "push": 2.5},
        "time_decay": {"email": 0.6667, "push": 2.3333},  # e1: push 0.5, email 1 (of 1.5)
        "position_based": {"email": 0.5, "push": 2.5},
    }
    assert a["value_credit"] == {
        "first": {"push": 70.0},
        "last": {"email": 50.0, "push": 20.0},
        "linear": {"email": 25.0, "push": 45.0},
        "time_decay": {"email": 33.33, "push": 36.67},
        "position_based": {"email": 25.0, "push": 45.0},
    }
    assert a["first_touch"] == a["first"] and a["last_touch"] == a["last"]
    steps = {
        (row["step"], row["channel"]): (row["first"], row["last"], row["linear"]) for row in report["by_step"]
    }
    assert steps == {("nudge", "push"): (3.0, 2.0, 2.5), ("detail", "email"): (0.0, 1.0, 0.5)}


def test_a_journey_report_lists_sequences_with_rates_and_median_time_to_convert(api, journey_world):
    report = api.get(f"/api/v1/journeys/{journey_world.slug}/report/").json()
    assert (report["enrolled"], report["converted"], report["exited"], report["conversion_rate"]) == (
        5,
        4,
        1,
        0.8,
    )
    rows = [
        (
            r["sequence"],
            r["steps"],
            r["entrants"],
            r["converted"],
            r["conversion_rate"],
            r["median_time_to_convert"],
        )
        for r in report["sequences"]
    ]
    assert rows == [
        ("push", "nudge (push)", 3, 2, 0.6667, "PT13H"),  # e2 after 1 d, e3 after 2 h: median 13 h
        ("(held out)", "", 1, 1, 1.0, "PT3H"),
        ("push → email", "nudge (push) → detail (email)", 1, 1, 1.0, "P2D"),
    ]
    assert report["touch_sequences"] == [
        {"sequence": "push", "converted": 2},
        {"sequence": "push → email", "converted": 1},
    ]
    funnel = {row["step"]: row for row in report["funnel"]}
    assert funnel["(entered)"]["entered"] == 5 and funnel["(converted)"]["entered"] == 4
    assert (funnel["nudge"]["entered"], funnel["nudge"]["reached"]) == (4, 4)
    assert (funnel["detail"]["entered"], funnel["detail"]["reached"]) == (2, 1)
    holdout = report["holdout"]
    assert (holdout["share"], holdout["exposed"], holdout["held_out"]) == (0.5, 4, 1)
    assert (holdout["exposed_converted"], holdout["held_out_converted"]) == (3, 1)
    assert holdout["verdict"] == "too_small" and holdout["summary"].startswith("Too small to tell")


def test_a_channel_filter_narrows_rows_not_the_credit_math(api, journey_world):
    report = api.get(f"/api/v1/journeys/{journey_world.slug}/report/", {"channel": "email"}).json()
    assert [row["channel"] for row in report["by_channel"]] == ["email"]
    assert report["by_channel"][0]["linear"] == 0.5  # still half of e1's conversion, as without the filter
    assert [r["sequence"] for r in report["sequences"]] == ["push → email"]


def test_no_conversions_show_zeros_not_errors(api):
    journey = active_journey()
    report = api.get(f"/api/v1/journeys/{journey.slug}/report/").json()
    assert (report["enrolled"], report["converted"], report["conversion_rate"]) == (0, 0, 0.0)
    a = report["attribution"]
    assert (a["conversions"], a["attributed"], a["value"]) == (0, 0, 0.0)
    assert all(a[m] == {} for m in MODELS)
    assert report["sequences"] == [] and report["holdout"]["exposed"] == 0
    body = api.get("/api/v1/reports/attribution/").json()
    assert body["conversions"] == 0 and body["first"] == {} and body["by_channel"] == []
