"""segments/ through the API as CONTRACT.md v1.1 says: CRUD, preview, and bad input that writes nothing."""

import pytest

from orchestrator.models import Segment

from .factories import ContactPointFactory, RecipientFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/segments/"
PRO = {
    "name": "Pro on email",
    "match": "all",
    "conditions": [{"attribute": "plan", "op": "eq", "value": "pro"}],
}


@pytest.fixture
def population():
    for n, plan in enumerate(["pro", "pro", "free"]):
        r = RecipientFactory(external_id=f"p{n}", attributes={"plan": plan})
        ContactPointFactory(recipient=r)


def test_create_read_update_preview_and_delete(api, population):
    created = api.post(URL, PRO, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["name"] == "Pro on email" and body["match"] == "all"
    assert body["conditions"] == PRO["conditions"] and body["summary"] == "plan is pro"
    sid = body["id"]

    assert api.get(f"{URL}{sid}/").json()["id"] == sid
    assert [s["id"] for s in api.get(URL).json()["results"]] == [sid]

    preview = api.get(f"{URL}{sid}/preview/")
    assert preview.status_code == 200
    assert preview.json() == {"count": 2, "sample": ["p0", "p1"]}

    patched = api.patch(
        f"{URL}{sid}/",
        {"conditions": [{"attribute": "plan", "op": "in", "value": ["pro", "free"]}]},
        format="json",
    )
    assert patched.status_code == 200, patched.json()
    assert patched.json()["name"] == "Pro on email"
    assert api.get(f"{URL}{sid}/preview/").json()["count"] == 3

    assert api.delete(f"{URL}{sid}/").status_code == 204
    assert api.get(f"{URL}{sid}/").status_code == 404
    assert api.get(f"{URL}{sid}/preview/").status_code == 404


def test_an_unsaved_definition_can_be_previewed(api, population):
    resp = api.post(f"{URL}preview/", {"match": "any", "conditions": PRO["conditions"]}, format="json")
    assert resp.status_code == 200 and resp.json()["count"] == 2


def test_an_empty_segment_previews_as_zero(api, population):
    sid = api.post(URL, {"name": "Nobody", "conditions": [{"event": "never_happens"}]}, format="json").json()[
        "id"
    ]
    assert api.get(f"{URL}{sid}/preview/").json() == {"count": 0, "sample": []}


@pytest.mark.parametrize(
    "body,field",
    [
        ({**PRO, "conditions": [{"attribute": "plan", "op": "like", "value": "p"}]}, "conditions[0].op"),
        ({**PRO, "conditions": [{"attribute": "plan", "op": "gt", "value": [1]}]}, "conditions[0].value"),
        (
            {**PRO, "conditions": [{"attribute": "d", "op": "gt", "value": "0000-01-01"}]},
            "conditions[0].value",
        ),
        ({**PRO, "conditions": [{"event": "x", "within": "P" + "9" * 30 + "D"}]}, "conditions[0].within"),
        ({**PRO, "conditions": "all of them"}, "conditions"),
        ({**PRO, "match": 1}, "match"),
        ({**PRO, "name": ""}, "name"),
        ({**PRO, "name": "x" * 201}, "name"),
        ({**PRO, "name": "nul\x00name"}, "name"),
        ({**PRO, "description": ["not", "text"]}, "description"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_writes_nothing(api, body, field):
    resp = api.post(URL, body, format="json")
    assert resp.status_code == 400, resp.json()
    assert field in resp.json(), resp.json()
    assert not Segment.objects.exists()


def test_a_non_object_body_is_400(api):
    assert api.post(URL, [1, 2], format="json").status_code == 400
    assert api.post(URL, "segment", format="json").status_code == 400


def test_a_duplicate_name_is_400_on_name(api):
    assert api.post(URL, PRO, format="json").status_code == 201
    resp = api.post(URL, PRO, format="json")
    assert resp.status_code == 400 and "name" in resp.json()
    assert Segment.objects.count() == 1


def test_a_bad_patch_changes_nothing(api):
    sid = api.post(URL, PRO, format="json").json()["id"]
    resp = api.patch(f"{URL}{sid}/", {"name": "Renamed", "conditions": [{"field": "mood"}]}, format="json")
    assert resp.status_code == 400 and "conditions[0].field" in resp.json()
    assert Segment.objects.get().name == "Pro on email"
    resp = api.patch(f"{URL}{sid}/", {"colour": "red"}, format="json")
    assert resp.status_code == 400 and "colour" in resp.json()


def test_segments_need_authentication(client):
    assert client.get(URL).status_code in (401, 403)
