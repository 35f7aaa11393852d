"""The report endpoints' input: every bad parameter is a 400 naming it, an unknown journey a 404."""

import pytest

from tests.journeys.factories import active_journey

pytestmark = pytest.mark.django_db

ATTRIBUTION = "/api/v1/reports/attribution/"


def test_an_unknown_journey_is_a_404(api):
    assert api.get("/api/v1/journeys/nope/report/").status_code == 404
    response = api.get(ATTRIBUTION, {"journey": "nope"})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found" and "nope" in response.json()["detail"]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"from": "2026-03-10", "to": "2026-03-01"}, "to"),
        ({"from": "2026-03-10T10:00:00Z", "to": "2026-03-10T10:00:00Z"}, "to"),
        ({"from": "2026-03-10T10:00:00Z", "to": "2026-03-10T09:00:00Z"}, "to"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-02-30"}, "to"),
        ({"from": "2026-03-01\x00"}, "from"),
        ({"from": "9" * 500}, "from"),
        ({"half_life": "0"}, "half_life"),
        ({"half_life": "-1"}, "half_life"),
        ({"half_life": "P0D"}, "half_life"),
        ({"half_life": "-P1D"}, "half_life"),
        ({"half_life": "PT0S"}, "half_life"),
        ({"half_life": "soon"}, "half_life"),
        ({"half_life": "nan"}, "half_life"),
        ({"half_life": "1e309"}, "half_life"),
        ({"half_life": "99999999999"}, "half_life"),
        ({"half_life": "P99999D"}, "half_life"),
        ({"model": "u_shaped"}, "model"),
        ({"model": "first,data_driven"}, "model"),
        ({"model": ","}, "model"),
        ({"channel": "fax"}, "channel"),
        ({"reached": "accepted"}, "reached"),
        ({"reached": ""}, "reached"),
        ({"conversion": "no such definition"}, "conversion"),
        ({"conversion": "a\x00b"}, "conversion"),
        ({"channel": "\x00"}, "channel"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_field(api, params, field):
    journey = active_journey()
    for url in (ATTRIBUTION, f"/api/v1/journeys/{journey.slug}/report/"):
        response = api.get(url, params)
        assert response.status_code == 400, (url, response.content)
        assert field in response.json(), response.json()


def test_a_nul_in_the_journey_parameter_is_a_400(api):
    response = api.get(ATTRIBUTION, {"journey": "cart\x00recovery"})
    assert response.status_code == 400 and "journey" in response.json()


def test_a_reversed_range_and_an_unknown_model_are_both_named(api):
    response = api.get(ATTRIBUTION, {"from": "2026-03-10", "to": "2026-03-01", "model": "x"})
    assert response.status_code == 400 and set(response.json()) == {"to", "model"}


@pytest.mark.parametrize(
    "params",
    [
        {"from": "0001-01-01", "to": "9999-12-31"},
        {"from": "2026-03-10", "to": "2026-03-10"},  # one whole day
        {"from": "2026-03-10T10:00:00+02:00"},
        {"half_life": "PT12H"},
        {"half_life": "0.5"},
        {"half_life": "12:00:00"},
        {"reached": "opened,clicked"},
        {"model": "time_decay"},
    ],
)
def test_good_parameters_answer(api, params):
    journey = active_journey()
    assert api.get(ATTRIBUTION, params).status_code == 200
    assert api.get(f"/api/v1/journeys/{journey.slug}/report/", params).status_code == 200


def test_the_filters_are_stated_back(api):
    body = api.get(ATTRIBUTION, {"from": "2026-03-01", "to": "2026-03-31", "half_life": "36"}).json()
    assert body["from"] == "2026-03-01T00:00:00+00:00" and body["to"] == "2026-04-01T00:00:00+00:00"
    assert body["half_life"] == "P36D" and body["reached"] == ["delivered", "opened", "clicked"]
    assert body["models"] == ["first", "last", "linear", "time_decay", "position_based"]


def test_the_report_endpoints_need_a_login(client):
    assert client.get(ATTRIBUTION).status_code in (401, 403)
