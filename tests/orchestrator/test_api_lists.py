"""GET recipients/ and GET messages/: every filter, cursor pagination over 10k rows (no duplicate, no gap,
ties on created_at included), scopes, bad input (400 naming the parameter), the index and the probes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from orchestrator.authority import SERVICE
from orchestrator.models import Message, MessageStatus, Recipient, Source
from tests.conftest import token_client, user_with_roles
from tests.orchestrator.factories import MessageFactory, RecipientFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def walk(api, url: str) -> list[dict]:
    """Every row of a list, following next links; asserts each page is 200."""
    rows: list[dict] = []
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content[:300]
        body = response.json()
        rows += body["results"]
        url = body["next"]
    return rows


# --- recipients ----------------------------------------------------------------------------------------


def test_recipients_list_filters_by_attribute_timezone_locale_and_created_range(api):
    pro = RecipientFactory(attributes={"plan": "pro", "seats": 5, "beta": True}, timezone="Europe/Paris")
    free = RecipientFactory(attributes={"plan": "free", "seats": "5"}, locale="pt-BR")
    old = RecipientFactory(attributes={}, created_at=T0 - timedelta(days=30))

    def ids(query: str) -> set[str]:
        response = api.get(f"/api/v1/recipients/?{query}")
        assert response.status_code == 200, response.content
        return {r["external_id"] for r in response.json()["results"]}

    assert ids("") == {pro.external_id, free.external_id, old.external_id}
    assert ids("attribute=plan:pro") == {pro.external_id}
    # "5" matches the number 5 and the text "5"; all conditions must hold.
    assert ids("attribute=seats:5") == {pro.external_id, free.external_id}
    assert ids("attribute=seats:5&attribute=plan:free") == {free.external_id}
    assert ids("attribute=beta:true") == {pro.external_id}
    assert ids("attribute=plan:nobody") == set()
    assert ids("timezone=Europe/Paris") == {pro.external_id}
    assert ids("locale=pt-BR") == {free.external_id}
    assert ids(f"created_before={(T0 - timedelta(days=1)).isoformat().replace('+00:00', 'Z')}") == {
        old.external_id
    }
    assert old.external_id not in ids("created_after=2026-03-01T00:00:00Z")
    # A date far out of range is clamped, not an error.
    assert ids("created_after=9999-12-31T23:59:59Z") == set()
    assert len(ids("created_after=0001-01-01T00:00:00Z")) == 3


def test_recipients_list_shows_contact_points_and_hides_erased(api):
    api.post("/api/v1/recipients/", {"external_id": "ada", "email": "ada@example.com"}, format="json")
    api.post("/api/v1/recipients/", {"external_id": "bob"}, format="json")
    assert api.delete("/api/v1/recipients/bob/").status_code == 204
    rows = api.get("/api/v1/recipients/").json()["results"]
    assert [r["external_id"] for r in rows] == ["ada"]
    assert rows[0]["email"] == "ada@example.com"


def _bulk_recipients(n: int) -> None:
    # Three in every instant: ties on created_at must be broken by id, never skipped or repeated.
    Recipient.objects.bulk_create(
        [Recipient(external_id=f"bulk-{i:05d}", created_at=T0 + timedelta(seconds=i // 3)) for i in range(n)],
        batch_size=2000,
    )


def test_recipients_cursor_walks_10k_rows_without_duplicate_or_gap(api):
    _bulk_recipients(10_000)
    rows = walk(api, "/api/v1/recipients/?page_size=1000")
    ids = [r["external_id"] for r in rows]
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    # Newest first, ties by id descending (bulk_create gives increasing ids in list order).
    assert ids == [f"bulk-{i:05d}" for i in reversed(range(10_000))]


def test_recipients_cursor_is_stable_while_rows_are_added_and_goes_back(api):
    _bulk_recipients(30)
    first = api.get("/api/v1/recipients/?page_size=10").json()
    RecipientFactory(external_id="newcomer", created_at=T0 + timedelta(days=1))
    second = api.get(first["next"]).json()
    assert [r["external_id"] for r in second["results"]] == [f"bulk-{i:05d}" for i in range(19, 9, -1)]
    back = api.get(second["previous"]).json()
    assert [r["external_id"] for r in back["results"]] == [r["external_id"] for r in first["results"]]
    # From the first page's own position backwards: the newcomer.
    assert [r["external_id"] for r in api.get(back["previous"]).json()["results"]] == ["newcomer"]


# --- messages ------------------------------------------------------------------------------------------


def test_messages_list_filters(api):
    ada, bob = RecipientFactory(external_id="ada"), RecipientFactory(external_id="bob")
    email = MessageFactory(recipient=ada, created_at=T0, sent_at=T0 + timedelta(minutes=1))
    push = MessageFactory(
        recipient=bob,
        channel="push",
        purpose="promotional",
        status=MessageStatus.DEFERRED,
        accepted_at=None,
        created_at=T0 + timedelta(hours=1),
    )
    journey = MessageFactory(
        recipient=bob,
        source=Source.JOURNEY,
        source_ref="cart-recovery · nudge",
        created_at=T0 + timedelta(hours=2),
        accepted_at=T0 + timedelta(hours=2),
    )
    other_journey = MessageFactory(
        recipient=bob, source=Source.JOURNEY, source_ref="cart-recovery-2 · nudge", created_at=T0
    )

    def ids(query: str) -> set[int]:
        response = api.get(f"/api/v1/messages/?{query}")
        assert response.status_code == 200, response.content
        return {m["id"] for m in response.json()["results"]}

    everything = {email.pk, push.pk, journey.pk, other_journey.pk}
    assert ids("") == everything
    assert ids("channel=push") == {push.pk}
    assert ids("channel=push&channel=email") == everything
    assert ids("status=deferred") == {push.pk}
    assert ids("purpose=promotional") == {push.pk}
    assert ids("source=journey") == {journey.pk, other_journey.pk}
    assert ids("journey=cart-recovery") == {journey.pk}
    assert ids("recipient=ada") == {email.pk}
    assert ids("recipient=nobody") == set()
    assert ids("since=2026-03-02T12:30:00Z") == {push.pk, journey.pk}
    assert ids("until=2026-03-02T12:30:00Z") == {email.pk, other_journey.pk}
    assert ids("sent_after=2026-03-02T12:00:30Z&sent_before=2026-03-02T12:02:00Z") == {email.pk}
    assert ids("accepted_after=2026-03-02T13:30:00Z") == {journey.pk}
    assert ids("accepted_before=2026-03-02T13:30:00Z") == {email.pk, other_journey.pk}
    row = api.get("/api/v1/messages/?recipient=ada").json()["results"][0]
    assert row["recipient"] == "ada" and row["content"] == {"subject": "Hello", "body": "A message."}


def test_messages_cursor_walks_10k_rows_without_duplicate_or_gap(api):
    who = RecipientFactory()
    Message.objects.bulk_create(
        [
            Message(
                recipient=who,
                channel="email",
                purpose="engagement",
                status=MessageStatus.SENT,
                content={"body": str(i)},
                created_at=T0 + timedelta(seconds=i // 4),
            )
            for i in range(10_000)
        ],
        batch_size=2000,
    )
    expected = list(Message.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    rows = walk(api, "/api/v1/messages/?page_size=700&status=sent")
    assert [m["id"] for m in rows] == expected
    assert len({m["id"] for m in rows}) == 10_000


# --- permissions and bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "scope"), [("/api/v1/recipients/", "recipients:read"), ("/api/v1/messages/", "messages:read")]
)
def test_a_token_without_the_scope_gets_403_naming_it(django_user_model, path, scope):
    user = user_with_roles(django_user_model, "svc", SERVICE)
    client = token_client(user, scopes=["send", "events", "recipients:write"])
    response = client.get(path)
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"
    assert scope in response.json()["detail"]
    assert (
        token_client(user_with_roles(django_user_model, "svc2", SERVICE), scopes=[scope])
        .get(path)
        .status_code
        == 200
    )


def test_an_account_without_the_role_gets_403_and_anonymous_401(django_user_model, client):
    nobody = user_with_roles(django_user_model, "nobody")
    response = token_client(nobody).get("/api/v1/messages/")
    assert response.status_code == 403
    assert response.json()["code"] == "missing_permission"
    assert client.get("/api/v1/recipients/").status_code in (401, 403)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=eyJ0IjoiOTk5OS0wMS0wMVQwMDowMDowMCswMDowMCIsImkiOjF9", "cursor"),  # year 9999
        ("cursor=eyJ0IjoxLCJpIjoxfQ", "cursor"),  # {"t":1,"i":1}
        ("cursor=%C3%A9", "cursor"),
        ("page_size=0", "page_size"),
        ("page_size=99999999999999999999999", "page_size"),
        ("page_size=ten", "page_size"),
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-45T00:00:00Z", "created_before"),
        ("attribute=plan", "attribute"),
        ("attribute=:pro", "attribute"),
        ("timezone=" + "x" * 65, "timezone"),
        ("timezone=a%00b", "timezone"),
    ],
)
def test_recipients_list_bad_input_is_a_400_naming_the_parameter(api, query, field):
    response = api.get(f"/api/v1/recipients/?{query}")
    assert response.status_code == 400, response.content
    assert field in response.json()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("channel=fax", "channel"),
        ("status=lost", "status"),
        ("source=carrier-pigeon", "source"),
        ("sent_after=9999-99-99", "sent_after"),
        ("accepted_before=0", "accepted_before"),
        ("recipient=" + "x" * 201, "recipient"),
        ("cursor=AAAA", "cursor"),
    ],
)
def test_messages_list_bad_input_is_a_400_naming_the_parameter(api, query, field):
    response = api.get(f"/api/v1/messages/?{query}")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_huge_numbers_and_extreme_dates_in_filters_are_answered(api):
    RecipientFactory(attributes={"n": 1})
    for query in (
        "attribute=n:99999999999999999999999999999",
        "attribute=n:1e999",
        "attribute=n:-0.000000000000001",
        "created_after=9999-12-31T23:59:59.999999Z&created_before=0001-01-01T00:00:00Z",
    ):
        assert api.get(f"/api/v1/recipients/?{query}").status_code == 200, query
    extremes = "since=9999-12-31T23:59:59Z&until=0001-01-01T00:00:00Z"
    assert api.get(f"/api/v1/messages/?{extremes}").status_code == 200


# --- the index and the probes --------------------------------------------------------------------------


def test_the_index_lists_every_collection_with_its_absolute_url(api):
    index = api.get("/api/v1/").json()
    for name in ("recipients", "messages", "events", "cap-rules", "quiet-hours", "journeys", "segments"):
        assert name in index, name
    for name in ("templates", "campaigns", "reports-attribution", "governor-check", "channel-pauses"):
        assert name in index, name
    assert index["recipients"] == "http://testserver/api/v1/recipients/"
    assert index["messages"] == "http://testserver/api/v1/messages/"
    for url in index.values():
        assert urlsplit(url).scheme == "http"


def test_healthz_and_readyz_answer_without_login(client):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    body = ready.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"
    assert body["checks"]["broker"] == "ok"
    assert "no-cache" in health["Cache-Control"] or "max-age=0" in health["Cache-Control"]


def test_readyz_says_503_when_the_database_does_not_answer(client, monkeypatch):
    from orchestrator import health

    def broken():
        raise health.connections[health.DEFAULT_DB_ALIAS].features.connection.Database.OperationalError("x")

    monkeypatch.setattr(health, "_database", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("error")


def test_next_links_keep_the_filters(api):
    RecipientFactory.create_batch(3, attributes={"plan": "pro"})
    body = api.get("/api/v1/recipients/?attribute=plan:pro&page_size=2").json()
    assert parse_qs(urlsplit(body["next"]).query)["attribute"] == ["plan:pro"]
