"""Each segment condition against a hand-built population of four recipients."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orchestrator.models import Channel, MessageStatus, Source
from orchestrator.segments import SegmentInvalid, segment_definition_validate
from orchestrator.selectors import segment_preview_for, segment_recipients_for

from .factories import ContactPointFactory, EventFactory, MessageFactory, PreferenceFactory, RecipientFactory

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def people():
    ana = RecipientFactory(
        external_id="ana",
        timezone="America/Los_Angeles",
        locale="pt-BR",
        attributes={"plan": "pro", "age": 34, "signed_up": "2026-01-10", "vip": True, "city": "Recife"},
    )
    ben = RecipientFactory(
        external_id="ben",
        timezone="UTC",
        locale="en-US",
        attributes={"plan": "free", "age": 19, "signed_up": "2025-06-01T08:00:00Z"},
    )
    chi = RecipientFactory(
        external_id="chi",
        timezone="Asia/Tokyo",
        locale="ja-JP",
        attributes={"plan": "team", "age": "unknown", "signed_up": "2025-02-30"},
    )
    dee = RecipientFactory(external_id="dee", timezone="UTC", locale="", attributes={})
    ContactPointFactory(recipient=ana, channel=Channel.EMAIL)
    ContactPointFactory(recipient=ana, channel=Channel.PUSH, address="tok-ana")
    ContactPointFactory(recipient=ben, channel=Channel.EMAIL)
    ContactPointFactory(recipient=dee, channel=Channel.SMS, address="+14155550100", opted_in=False)
    ContactPointFactory(recipient=dee, channel=Channel.IN_APP, address="")
    PreferenceFactory(recipient=ben, channel=Channel.EMAIL, purpose="promotional", opted_in=False)
    for days in (1, 3, 9):
        EventFactory(recipient=ana, name="purchase", occurred_at=AT - timedelta(days=days))
    EventFactory(recipient=ben, name="purchase", occurred_at=AT - timedelta(days=40))
    EventFactory(recipient=dee, name="app_open", occurred_at=AT - timedelta(hours=1))
    EventFactory(recipient=dee, name="purchase", occurred_at=AT + timedelta(days=1))  # after `at`: not yet
    journey = {"source": Source.JOURNEY, "source_ref": "cart-recovery · nudge"}
    MessageFactory(recipient=ana, status=MessageStatus.OPENED, created_at=AT - timedelta(days=2), **journey)
    MessageFactory(
        recipient=ben, status=MessageStatus.DELIVERED, created_at=AT - timedelta(days=2), **journey
    )
    MessageFactory(
        recipient=chi,
        status=MessageStatus.SUPPRESSED,
        accepted_at=None,
        created_at=AT - timedelta(days=2),
        **journey,
    )
    MessageFactory(
        recipient=dee,
        status=MessageStatus.CLICKED,
        created_at=AT - timedelta(days=20),
        source=Source.JOURNEY,
        source_ref="cart-recovery-2 · nudge",  # another journey whose slug starts the same
    )
    MessageFactory(
        recipient=chi,
        status=MessageStatus.DELIVERED,
        created_at=AT - timedelta(days=1),
        source=Source.CAMPAIGN,
        source_ref="7 · Spring sale",
    )


def members(*conditions, match="all") -> set[str]:
    segment_definition_validate(match=match, conditions=list(conditions))
    qs = segment_recipients_for(match=match, conditions=list(conditions), at=AT)
    return set(qs.values_list("external_id", flat=True))


@pytest.mark.parametrize(
    "condition,expected",
    [
        ({"attribute": "plan", "op": "eq", "value": "pro"}, {"ana"}),
        ({"attribute": "vip", "op": "eq", "value": True}, {"ana"}),
        ({"attribute": "age", "op": "eq", "value": 19}, {"ben"}),
        ({"attribute": "plan", "op": "ne", "value": "pro"}, {"ben", "chi", "dee"}),
        ({"attribute": "plan", "op": "in", "value": ["free", "team", "nope"]}, {"ben", "chi"}),
        ({"attribute": "city", "op": "exists"}, {"ana"}),
        ({"attribute": "city", "op": "exists", "value": False}, {"ben", "chi", "dee"}),
        # numbers: a string "unknown" never compares, and nothing fails on it
        ({"attribute": "age", "op": "gt", "value": 19}, {"ana"}),
        ({"attribute": "age", "op": "gte", "value": 19}, {"ana", "ben"}),
        ({"attribute": "age", "op": "lt", "value": 34}, {"ben"}),
        ({"attribute": "age", "op": "lte", "value": 34.0}, {"ana", "ben"}),
        ({"attribute": "age", "op": "gt", "value": 19, "negate": True}, {"ben", "chi", "dee"}),
        # dates: a date or a date-time; the impossible 2025-02-30 matches nothing instead of failing
        ({"attribute": "signed_up", "op": "gte", "value": "2026-01-01"}, {"ana"}),
        ({"attribute": "signed_up", "op": "lt", "value": "2025-06-01T09:00:00+00:00"}, {"ben"}),
        ({"attribute": "signed_up", "op": "gt", "value": {"ago": "P90D"}}, {"ana"}),
        ({"attribute": "signed_up", "op": "lte", "value": "9999-12-31"}, {"ana", "ben"}),
        ({"field": "timezone", "op": "eq", "value": "UTC"}, {"ben", "dee"}),
        ({"field": "timezone", "op": "in", "value": ["Asia/Tokyo", "America/Los_Angeles"]}, {"ana", "chi"}),
        ({"field": "timezone", "op": "ne", "value": "UTC"}, {"ana", "chi"}),
        ({"field": "locale", "op": "eq", "value": "pt-BR"}, {"ana"}),
        ({"field": "locale", "op": "in", "value": ["en-US", "ja-JP"]}, {"ben", "chi"}),
        ({"field": "locale", "op": "exists", "value": False}, {"dee"}),
        ({"field": "reachable", "op": "eq", "value": "email"}, {"ana", "ben"}),
        ({"field": "reachable", "op": "ne", "value": "email"}, {"chi", "dee"}),
        ({"field": "reachable", "op": "eq", "value": "sms"}, set()),  # dee's phone is opted out
        ({"field": "reachable", "op": "in", "value": ["push", "in_app"]}, {"ana", "dee"}),
        ({"field": "reachable", "op": "exists"}, {"ana", "ben", "dee"}),
        ({"field": "reachable", "op": "exists", "value": False}, {"chi"}),
        ({"field": "opted_in", "op": "eq", "value": "email", "purpose": "promotional"}, {"ana"}),
        ({"field": "opted_in", "op": "eq", "value": "email", "purpose": "transactional"}, {"ana", "ben"}),
        ({"field": "opted_in", "op": "eq", "value": "email"}, {"ana"}),
        (
            {"field": "opted_in", "op": "ne", "value": "email", "purpose": "promotional"},
            {"ben", "chi", "dee"},
        ),
        ({"event": "purchase"}, {"ana", "ben"}),
        ({"event": "purchase", "within": "P30D"}, {"ana"}),
        ({"event": "purchase", "min_count": 3, "within": "P30D"}, {"ana"}),
        ({"event": "purchase", "min_count": 3, "within": "P5D"}, set()),
        ({"event": "purchase", "min_count": 2}, {"ana"}),
        ({"event": "purchase", "within": "P30D", "negate": True}, {"ben", "chi", "dee"}),
        ({"event": "app_open", "within": "PT2H"}, {"dee"}),
        ({"message": "received", "journey": "cart-recovery"}, {"ana", "ben"}),
        ({"message": "opened", "journey": "cart-recovery"}, {"ana"}),
        ({"message": "opened"}, {"ana", "dee"}),
        ({"message": "clicked", "journey": "cart-recovery-2"}, {"dee"}),
        ({"message": "received", "journey": "cart-recovery", "within": "P1D"}, set()),
        ({"message": "received", "campaign": 7}, {"chi"}),
        ({"message": "received", "channel": "push"}, set()),
    ],
)
def test_each_condition_selects_exactly_its_recipients(people, condition, expected):
    assert members(condition) == expected


def test_all_needs_every_condition_and_any_needs_one(people):
    pro = {"attribute": "plan", "op": "eq", "value": "pro"}
    utc = {"field": "timezone", "op": "eq", "value": "UTC"}
    assert members(pro, utc) == set()
    assert members(pro, utc, match="any") == {"ana", "ben", "dee"}
    assert members() == {"ana", "ben", "chi", "dee"}  # no conditions: everyone


def test_preview_counts_and_samples_in_one_query(people):
    conditions = [{"field": "reachable", "op": "exists"}]
    with CaptureQueriesContext(connection) as queries:
        preview = segment_preview_for(match="all", conditions=conditions, at=AT)
    assert len(queries) == 1
    assert preview.count == 3 and set(preview.sample) == {"ana", "ben", "dee"}
    empty = segment_preview_for(match="all", conditions=[{"event": "never"}], at=AT)
    assert empty.count == 0 and empty.sample == []


def test_equality_uses_the_attributes_index_operator(people):
    qs = segment_recipients_for(
        match="all", conditions=[{"attribute": "plan", "op": "eq", "value": "pro"}], at=AT
    )
    assert "@>" in str(qs.query)  # jsonb containment: what the GIN index on attributes serves


@pytest.mark.parametrize(
    "match,conditions,field",
    [
        ("some", [], "match"),
        ("all", {"attribute": "x"}, "conditions"),
        ("all", ["plan = pro"], "conditions[0]"),
        ("all", [{"attribute": "plan", "op": "between", "value": 1}], "conditions[0].op"),
        ("all", [{"attribute": "plan", "op": "eq"}], "conditions[0].value"),
        ("all", [{"attribute": "plan", "op": "eq", "value": {"a": 1}}], "conditions[0].value"),
        ("all", [{"attribute": "age", "op": "gt", "value": "soon"}], "conditions[0].value"),
        ("all", [{"attribute": "age", "op": "gt", "value": 1e300}], "conditions[0].value"),
        ("all", [{"attribute": "age", "op": "in", "value": []}], "conditions[0].value"),
        ("all", [{"attribute": "", "op": "exists"}], "conditions[0].attribute"),
        ("all", [{"attribute": "a", "op": "eq", "value": 1, "colour": "red"}], "conditions[0].colour"),
        ("all", [{"field": "mood", "op": "eq", "value": "x"}], "conditions[0].field"),
        ("all", [{"field": "timezone", "op": "gt", "value": "UTC"}], "conditions[0].op"),
        ("all", [{"field": "reachable", "op": "eq", "value": "fax"}], "conditions[0].value"),
        (
            "all",
            [{"field": "opted_in", "op": "eq", "value": "email", "purpose": "spam"}],
            "conditions[0].purpose",
        ),
        ("all", [{"event": "purchase", "within": "thirty days"}], "conditions[0].within"),
        ("all", [{"event": "purchase", "within": "P99999D"}], "conditions[0].within"),
        ("all", [{"event": "purchase", "min_count": 0}], "conditions[0].min_count"),
        ("all", [{"message": "read"}], "conditions[0].message"),
        ("all", [{"event": "x", "attribute": "y"}], "conditions[0]"),
        ("all", [{"attribute": "a", "op": "eq", "value": "x\x00y"}], "conditions"),
        ("all", [{"attribute": "a", "op": "exists", "negate": "yes"}], "conditions[0].negate"),
    ],
)
def test_a_malformed_condition_is_refused_naming_the_field(match, conditions, field):
    with pytest.raises(SegmentInvalid) as exc:
        segment_definition_validate(match=match, conditions=conditions)
    assert field in exc.value.errors, exc.value.errors
