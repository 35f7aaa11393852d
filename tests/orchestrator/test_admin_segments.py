"""The segment screens in the admin: the live count endpoint and saving through the service."""

import json

import pytest

from orchestrator.models import Segment

from .factories import RecipientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("team", "team@example.com", "pass-12345")
    client.force_login(user)
    return client


def test_live_preview_counts_the_definition_being_edited(staff):
    RecipientFactory(external_id="a", attributes={"plan": "pro"})
    RecipientFactory(external_id="b", attributes={"plan": "free"})
    body = {"match": "all", "conditions": [{"attribute": "plan", "op": "eq", "value": "pro"}]}
    resp = staff.post(
        "/admin/orchestrator/segment/preview/", json.dumps(body), content_type="application/json"
    )
    assert resp.status_code == 200
    assert resp.json() == {"count": 1, "sample": ["a"], "summary": "plan is pro"}
    bad = {"match": "all", "conditions": [{"attribute": "plan", "op": "like"}]}
    resp = staff.post(
        "/admin/orchestrator/segment/preview/", json.dumps(bad), content_type="application/json"
    )
    assert resp.status_code == 400 and "conditions[0].op" in resp.json()["errors"]


def test_saving_the_form_writes_a_valid_segment_and_refuses_a_bad_one(staff):
    form = {
        "name": "Pros",
        "description": "",
        "match": "all",
        "conditions": '[{"field": "locale", "op": "eq", "value": "pt-BR"}]',
    }
    resp = staff.post("/admin/orchestrator/segment/add/", form)
    assert resp.status_code == 302, resp.content.decode()[:2000]
    assert Segment.objects.get().conditions == [{"field": "locale", "op": "eq", "value": "pt-BR"}]
    form = {**form, "name": "Bad", "conditions": '[{"field": "mood", "op": "eq", "value": 1}]'}
    resp = staff.post("/admin/orchestrator/segment/add/", form)
    assert resp.status_code == 200 and "conditions[0].field" in resp.content.decode()
    assert Segment.objects.count() == 1
    page = staff.get(f"/admin/orchestrator/segment/{Segment.objects.get().pk}/change/")
    assert page.status_code == 200 and b"segment_builder.js" in page.content
    listing = staff.get("/admin/orchestrator/segment/")
    assert b"locale is pt-BR" in listing.content
