"""Every input that once answered 500 (issue 9), replayed through the API: each gets a 4xx naming the
field, and nothing is written. Plus the documented limits, each refused with a 400 naming its field."""

from __future__ import annotations

import copy
import json

import pytest
from django.apps import apps

from journeys.demo import cart_recovery_definition
from journeys.models import Journey
from journeys.services import journey_create
from orchestrator.models import Recipient
from tests.orchestrator.factories import ReachableRecipientFactory

pytestmark = pytest.mark.django_db

NUL = "\x00"
LONG = "x" * 10_000


def definition(**changes):
    d = cart_recovery_definition()
    d["slug"] = "bad-one"
    d.update(changes)
    return d


def with_step(index, **changes):
    d = definition()
    d["steps"][index] = {**d["steps"][index], **changes}
    return d


def chained(kind: str, n: int = 10_000) -> dict:
    """n steps, each jumping to the next (branches) or following it (sends)."""
    steps = []
    for i in range(n):
        if kind == "branch":
            steps.append({"id": f"s{i}", "type": "branch", "if": "converted", "then": f"s{(i + 1) % n}"})
        else:
            # Compact, so that 10,000 of them stay under the 1 MiB upload limit.
            steps.append(
                {"id": f"s{i}", "type": "send", "channel": "email", "content": {"subject": "H", "body": "H"}}
            )
    return definition(steps=steps)


def wait_only_loop() -> dict:
    return definition(
        steps=[
            {
                "id": "nudge",
                "type": "send",
                "channel": "email",
                "content": {"subject": "Hi", "body": "Hello"},
            },
            {"id": "pause", "type": "wait", "duration": "PT2H"},
            {"id": "again", "type": "branch", "if": "converted", "then": "done", "else": "pause"},
            {"id": "done", "type": "exit"},
        ]
    )


def message(**changes) -> dict:
    body = {
        "recipient": "r1",
        "channel": "push",
        "purpose": "transactional",
        "content": {"title": "Your order", "body": "It shipped.", "action_url": "app://orders"},
    }
    body.update(changes)
    return body


def content(**changes) -> dict:
    return message(content={**message()["content"], **changes})


def raw(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# (label, method, path, body (a dict → JSON; a str → sent as is), extra headers, status, field or code)
CASES = [
    # Non-object JSON bodies.
    ("journey body is a string", "post", "/api/v1/journeys/", '"x"', {}, 400, "non_field_errors"),
    ("journey body is a list", "post", "/api/v1/journeys/", "[1, 2]", {}, 400, "non_field_errors"),
    ("journey body is null", "post", "/api/v1/journeys/", "null", {}, 400, "non_field_errors"),
    ("journey patch is a string", "patch", "/api/v1/journeys/draft-one/", '"x"', {}, 400, "non_field_errors"),
    (
        "journey patch is a list",
        "patch",
        "/api/v1/journeys/draft-one/",
        "[1, 2]",
        {},
        400,
        "non_field_errors",
    ),
    ("journey patch is null", "patch", "/api/v1/journeys/draft-one/", "null", {}, 400, "non_field_errors"),
    ("message body is a list", "post", "/api/v1/messages/", "[1]", {}, 400, "non_field_errors"),
    # NUL characters in any JSON string (PostgreSQL text cannot hold them).
    ("NUL in content", "post", "/api/v1/messages/", content(body=f"a{NUL}b"), {}, 400, "content.body"),
    (
        "NUL in attributes",
        "post",
        "/api/v1/recipients/",
        {"external_id": "n1", "timezone": "UTC", "attributes": {"plan": f"pro{NUL}"}},
        {},
        400,
        "attributes.plan",
    ),
    (
        "NUL in a recipient id",
        "post",
        "/api/v1/recipients/",
        {"external_id": f"n{NUL}1", "timezone": "UTC"},
        {},
        400,
        "external_id",
    ),
    (
        "NUL in event properties",
        "post",
        "/api/v1/events/",
        {"recipient": "r1", "name": "viewed", "properties": {"sku": f"A{NUL}"}},
        {},
        400,
        "properties.sku",
    ),
    (
        "NUL in an event name",
        "post",
        "/api/v1/events/",
        {"recipient": "r1", "name": f"a{NUL}"},
        {},
        400,
        "name",
    ),
    ("NUL in a journey name", "post", "/api/v1/journeys/", definition(name=f"J{NUL}"), {}, 400, "name"),
    ("NUL in a cap rule name", "post", "/api/v1/cap-rules/", {"name": NUL}, {}, 400, "name"),
    ("NUL in a query", "get", "/api/v1/recipients/r1/messages/?since=%00", None, {}, 400, "since"),
    ("NUL in a path", "get", "/api/v1/recipients/r%001/", None, {}, 400, "invalid_path"),
    # Idempotency-Key over 255 characters.
    (
        "long Idempotency-Key",
        "post",
        "/api/v1/messages/",
        message(),
        {"HTTP_IDEMPOTENCY_KEY": "k" * 300},
        400,
        "Idempotency-Key",
    ),
    (
        "long Idempotency-Key on events",
        "post",
        "/api/v1/events/",
        {"recipient": "r1", "name": "x"},
        {"HTTP_IDEMPOTENCY_KEY": "k" * 256},
        400,
        "Idempotency-Key",
    ),
    # Cap rule limits beyond the column; windows beyond a year.
    (
        "cap limit 2^31",
        "post",
        "/api/v1/cap-rules/",
        {"name": "big", "limit": 2**31, "window": "P1D", "purposes": ["engagement"]},
        {},
        400,
        "limit",
    ),
    (
        "cap limit 10^30",
        "post",
        "/api/v1/cap-rules/",
        {"name": "huge", "limit": 10**30, "window": "P1D", "purposes": ["engagement"]},
        {},
        400,
        "limit",
    ),
    (
        "cap window overflow",
        "post",
        "/api/v1/cap-rules/",
        {"name": "long", "limit": 3, "window": "P99999999999D", "purposes": ["engagement"]},
        {},
        400,
        "window",
    ),
    (
        "cap window over a year",
        "post",
        "/api/v1/cap-rules/",
        {"name": "long", "limit": 3, "window": "P400D", "purposes": ["engagement"]},
        {},
        400,
        "window",
    ),
    # Journeys: huge chains, a list as a jump target, overflowing waits, too-long names, a wait-only loop.
    ("10,000 chained branches", "post", "/api/v1/journeys/", chained("branch"), {}, 400, "steps"),
    ("10,000 chained sends", "post", "/api/v1/journeys/", chained("send"), {}, 400, "steps"),
    (
        "then is a list",
        "post",
        "/api/v1/journeys/",
        definition(steps=[{"id": "b", "type": "branch", "if": "converted", "then": ["x"]}]),
        {},
        400,
        "then",
    ),
    (
        "wait overflow",
        "post",
        "/api/v1/journeys/",
        with_step(1, duration="P99999999999D"),
        {},
        400,
        "duration",
    ),
    ("wait over a year", "post", "/api/v1/journeys/", with_step(1, duration="P366D"), {}, 400, "duration"),
    (
        "timeout overflow",
        "post",
        "/api/v1/journeys/",
        with_step(3, timeout="P99999999999D"),
        {},
        400,
        "timeout",
    ),
    (
        "goal window overflow",
        "post",
        "/api/v1/journeys/",
        definition(goal={"event": "purchase", "within": "P99999999999D"}),
        {},
        400,
        "goal.within",
    ),
    ("10,000-character name", "post", "/api/v1/journeys/", definition(name=LONG), {}, 400, "name"),
    (
        "10,000-character trigger",
        "post",
        "/api/v1/journeys/",
        definition(trigger={"event": LONG}),
        {},
        400,
        "trigger.event",
    ),
    (
        "10,000-character awaited event",
        "post",
        "/api/v1/journeys/",
        with_step(3, event=LONG),
        {},
        400,
        "event",
    ),
    ("101 steps", "post", "/api/v1/journeys/", chained("send", 101), {}, 400, "steps"),
    ("a wait-only loop", "post", "/api/v1/journeys/", wait_only_loop(), {}, 400, "then"),
    # deliver_after and governor/check at the edges of time.
    (
        "deliver_after in 9999 on a push",
        "post",
        "/api/v1/messages/",
        message(deliver_after="9999-12-31T23:00:00Z"),
        {},
        400,
        "deliver_after",
    ),
    (
        "expires_at in 9999",
        "post",
        "/api/v1/messages/",
        message(expires_at="9999-12-31T23:00:00Z"),
        {},
        400,
        "expires_at",
    ),
    (
        "deliver_after after expires_at",
        "post",
        "/api/v1/messages/",
        message(deliver_after="__IN_2_DAYS__", expires_at="__IN_1_DAY__"),
        {},
        400,
        "deliver_after",
    ),
    (
        "check at year 1",
        "post",
        "/api/v1/governor/check/",
        {"recipient": "r1", "channel": "push", "purpose": "engagement", "at": "0001-01-01T00:00:00Z"},
        {},
        400,
        "at",
    ),
    (
        "check at year 9999",
        "post",
        "/api/v1/governor/check/",
        {"recipient": "r1", "channel": "push", "purpose": "engagement", "at": "9999-12-31T23:59:59Z"},
        {},
        400,
        "at",
    ),
    (
        "event in year 9999",
        "post",
        "/api/v1/events/",
        {"recipient": "r1", "name": "x", "occurred_at": "9999-12-31T23:59:59-05:00"},
        {},
        400,
        "occurred_at",
    ),
    # Documented limits.
    (
        "push body over its channel limit",
        "post",
        "/api/v1/messages/",
        content(body="w " * 1500),
        {},
        400,
        "content.body",
    ),
    (
        "content over 64 KB",
        "post",
        "/api/v1/messages/",
        message(channel="email", content={"subject": "s", "body": "b", "extra": "x" * 70_000}),
        {},
        400,
        "content",
    ),
    (
        "javascript: action_url",
        "post",
        "/api/v1/messages/",
        content(action_url="javascript:alert(1)"),
        {},
        400,
        "content.action_url",
    ),
    (
        "data: action_url",
        "post",
        "/api/v1/messages/",
        content(action_url="data:text/html,<b>x</b>"),
        {},
        400,
        "content.action_url",
    ),
    (
        "attributes over 32 KB",
        "post",
        "/api/v1/recipients/",
        {"external_id": "big", "timezone": "UTC", "attributes": {"x": "y" * 40_000}},
        {},
        400,
        "attributes",
    ),
    (
        "properties over 32 KB",
        "post",
        "/api/v1/events/",
        {"recipient": "r1", "name": "big", "properties": {"x": "y" * 40_000}},
        {},
        400,
        "properties",
    ),
    (
        "21 push tokens",
        "post",
        "/api/v1/recipients/",
        {"external_id": "many", "timezone": "UTC", "push_tokens": [f"t{i}" for i in range(21)]},
        {},
        400,
        "push_tokens",
    ),
    (
        "external_id with a slash",
        "post",
        "/api/v1/recipients/",
        {"external_id": "a/b", "timezone": "UTC"},
        {},
        400,
        "external_id",
    ),
    (
        "external_id with a space",
        "post",
        "/api/v1/recipients/",
        {"external_id": "a b", "timezone": "UTC"},
        {},
        400,
        "external_id",
    ),
    (
        "external_id '..'",
        "post",
        "/api/v1/recipients/",
        {"external_id": "..", "timezone": "UTC"},
        {},
        400,
        "external_id",
    ),
    (
        "journey action_url javascript:",
        "post",
        "/api/v1/journeys/",
        with_step(0, content={"title": "t", "body": "b", "action_url": "javascript:alert(1)"}),
        {},
        400,
        "content.action_url",
    ),
    # Shapes that once went deep.
    (
        "nesting 100,000 deep",
        "post",
        "/api/v1/events/",
        "[" * 100_000 + "]" * 100_000,
        {},
        400,
        "parse_error",
    ),
    (
        "nesting 50 deep",
        "post",
        "/api/v1/events/",
        {"recipient": "r1", "name": "deep", "properties": json.loads('{"a":' * 50 + "1" + "}" * 50)},
        {},
        400,
        "properties",
    ),
]


def _counts() -> dict[str, int]:
    return {
        m._meta.label: m.objects.count()
        for m in apps.get_models()
        if m._meta.app_label in {"orchestrator", "governor", "channels_app", "journeys"} and not m._meta.proxy
    }


def _named(body, field: str) -> bool:
    """The 400 names the field: as a key, in a journey definition's errors, or as the code/field given."""
    if not isinstance(body, dict):
        return False
    if field in body or body.get("code") == field or body.get("field") == field:
        return True
    return any(e.get("field") == field for e in body.get("errors", []))


@pytest.fixture
def world(api, api_user):
    api_user.is_superuser = True  # cap rules take the messaging team's permissions
    api_user.save()
    ReachableRecipientFactory(external_id="r1")
    journey_create(definition={**cart_recovery_definition(), "slug": "draft-one"}, now=_now())


def _now():
    from django.utils import timezone

    return timezone.now()


def _dates(body):
    from datetime import timedelta

    text = raw(body)
    now = _now()
    for token, days in (("__IN_1_DAY__", 1), ("__IN_2_DAYS__", 2)):
        text = text.replace(token, (now + timedelta(days=days)).isoformat())
    return text


@pytest.mark.parametrize(
    "label, method, path, body, headers, status, field", CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_gets_a_4xx_naming_the_field_and_writes_nothing(
    api, world, label, method, path, body, headers, status, field
):
    before = _counts()
    kwargs = {"content_type": "application/json", **headers}
    if body is not None:
        kwargs["data"] = _dates(body)
    response = api.generic(method.upper(), path, **kwargs)
    assert response.status_code == status, (label, response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    assert _named(response.json(), field), (label, response.json())
    assert _counts() == before, label


def test_a_body_over_the_upload_limit_answers_413_in_json(api, world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    before = _counts()
    response = api.post("/api/v1/events/", {"recipient": "r1", "name": "x" * 20_000}, format="json")
    assert response.status_code == 413 and response.json()["code"] == "request_too_large"
    assert _counts() == before


def test_unknown_api_paths_and_methods_answer_json_whatever_debug_says(api, settings):
    for debug in (True, False):
        settings.DEBUG = debug
        missing = api.get("/api/v1/nope/")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert api.get("/api/v2/").json()["code"] == "not_found"
        wrong = api.put("/api/v1/messages/", {}, format="json")
        assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
        no_slash = api.post("/api/v1/messages", {}, format="json")
        assert no_slash.status_code == 404 and "/api/v1/messages/" in no_slash.json()["detail"]
        assert api.get("/api/v1/cap-rules").status_code == 301


def test_a_valid_definition_still_goes_through_after_all_this(api, world):
    good = copy.deepcopy(cart_recovery_definition())
    good["slug"] = "fine"
    assert api.post("/api/v1/journeys/", good, format="json").status_code == 201
    assert Journey.objects.filter(slug="fine").exists()
    assert Recipient.objects.filter(external_id="r1").exists()
