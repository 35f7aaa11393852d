"""The reports on the embedded SQLite of `make run`: the same hand-computed numbers as on PostgreSQL.

The suite runs on PostgreSQL; this builds a small fixture in a throwaway SQLite file in a subprocess and
checks the five models, the sequences (with their median), the funnel and the global holdout there.
"""

import json

import pytest

from tests.integration.sqlite import sqlite_manage

SCRIPT = r"""
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from governor.models import GlobalHoldout
from journeys.demo import cart_recovery_definition
from journeys.models import ConversionDefinition, Enrollment, StepRun
from journeys.reports import attribution_report, journey_report, overall_report, report_filters_parse
from journeys.services import journey_create, journey_transition
from orchestrator.models import Event, Message, Recipient

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
D = timedelta(days=1)
ConversionDefinition.objects.create(name="Purchase", event="purchase", value_property="amount")
GlobalHoldout.objects.create(pk=1, share=Decimal("0.5"))


def recipient(name):
    return Recipient.objects.create(external_id=name, created_at=T - 30 * D)


def touch(r, channel, at, status="delivered"):
    return Message.objects.create(
        recipient=r, channel=channel, purpose="engagement", content={"body": "x"}, status=status,
        created_at=at - timedelta(minutes=1), sent_at=at, delivered_at=at if status == "delivered" else None,
    )


def buy(r, amount, at=T):
    Event.objects.create(recipient=r, name="purchase", occurred_at=at, properties={"amount": amount})


repeat, tie, none = recipient("repeat"), recipient("tie"), recipient("none")
for r, channel, at, status in (
    (repeat, "push", T - 3 * D, "delivered"),
    (repeat, "email", T - 2 * D, "delivered"),
    (repeat, "push", T - D, "delivered"),
    (tie, "email", T - D, "delivered"),
    (tie, "push", T - D, "delivered"),
    (tie, "in_app", T, "delivered"),
    (none, "push", T - D, "sent"),
    (none, "email", T - 8 * D, "delivered"),
):
    touch(r, channel, at, status)
buy(repeat, 60)
buy(tie, "40")
buy(none, 10)

definition = cart_recovery_definition()
definition["goal"]["value_property"] = "amount"
journey = journey_create(definition=definition, now=T - 10 * D)
for action in ("propose", "approve", "activate"):
    journey = journey_transition(journey=journey, action=action, now=T - 10 * D)
for name, entered, converted, channels in (
    ("j1", T - 2 * D, T, [("nudge", "push", T - 2 * D), ("detail", "email", T - D)]),
    ("j2", T - D, T, [("nudge", "push", T - D)]),
    ("j3", T - 2 * timedelta(hours=1), T, [("nudge", "push", T - timedelta(hours=1))]),
    ("j4", T - D, None, [("nudge", "push", T - D)]),
):
    r = recipient(name)
    e = Enrollment.objects.create(
        journey=journey, version=journey.live_version, recipient=r, entered_at=entered, step_id="",
        status="converted" if converted else "exited", converted_at=converted, ended_at=converted or T,
    )
    for seq, (step, channel, at) in enumerate(channels):
        m = touch(r, channel, at)
        StepRun.objects.create(enrollment=e, seq=seq, step_id=step, step_type="send", status="sent",
                               message=m, started_at=at)
    if converted:
        buy(r, 50 if name == "j1" else 20 if name == "j2" else 0, at=converted)

f = report_filters_parse({"from": "2026-03-01", "to": "2026-03-31", "half_life": "P1D"})
overall = attribution_report(filters=f)
jf = report_filters_parse({"from": "2026-03-01", "half_life": "P1D", "journey": journey.slug})
jr = journey_report(journey=journey, filters=jf)
full = overall_report(filters=f)
print("RESULT " + json.dumps({
    "models": {m: overall[m] for m in ("first", "last", "linear", "time_decay", "position_based")},
    "value": overall["value_credit"]["time_decay"],
    "totals": [overall["conversions"], overall["attributed"], overall["value"]],
    "journey": {m: jr["attribution"][m] for m in ("first", "last", "linear", "time_decay", "position_based")},
    "sequences": [
        [s["sequence"], s["entrants"], s["converted"], s["median_time_to_convert"]] for s in jr["sequences"]
    ],
    "funnel": {row["step"]: row["entered"] for row in jr["funnel"]},
    "holdout": [full["holdout"]["exposed"] + full["holdout"]["held_out"], full["holdout"]["share"]],
}))
"""


@pytest.mark.slow
def test_the_reports_compute_the_same_numbers_on_sqlite(tmp_path):
    manage = sqlite_manage(tmp_path / "reports.sqlite3")
    manage("migrate", "--noinput", "-v0")
    out = manage("shell", "-c", SCRIPT)
    result = json.loads(out.split("RESULT ", 1)[1])
    # The repeat and tie cases of tests/journeys/test_attribution.py, plus j1..j3's touches (all push
    # first; j1 ends on email), by hand.
    assert result["models"] == {
        "first": {"email": 0.5, "push": 4.5},
        "last": {"email": 1.0, "in_app": 1.0, "push": 3.0},
        "linear": {"email": 1.1667, "in_app": 0.3333, "push": 3.5},
        "time_decay": {"email": 1.2024, "in_app": 0.5, "push": 3.2976},
        "position_based": {"email": 0.95, "in_app": 0.5, "push": 3.55},
    }
    assert result["totals"] == [6, 5, 180.0]
    assert result["value"] == {"email": 60.48, "in_app": 20.0, "push": 89.52}
    assert result["journey"]["time_decay"] == {"email": 0.6667, "push": 2.3333}
    assert result["sequences"] == [["push", 3, 2, "PT13H"], ["push → email", 1, 1, "P2D"]]
    assert result["funnel"] == {
        "(entered)": 4,
        "nudge": 4,
        "pause": 0,
        "detail": 1,
        "visit": 0,
        "prompt": 0,
        "(converted)": 3,
    }
    assert result["holdout"] == [7, 0.5]
