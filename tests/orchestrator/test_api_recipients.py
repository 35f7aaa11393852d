import pytest

from orchestrator.models import ContactPoint, Preference, Recipient

from .factories import RecipientFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/recipients/"


def upsert(api, **body):
    return api.post(URL, body, format="json")


def test_requires_authentication(client):
    assert client.post(URL, {"external_id": "x"}, content_type="application/json").status_code in (401, 403)


def test_upsert_creates_a_recipient_with_contact_points(api):
    resp = upsert(
        api,
        external_id="u1",
        timezone="Europe/Paris",
        locale="fr-FR",
        attributes={"plan": "pro"},
        email="Ada@Example.COM",
        phone="+33 6 12 34 56 78",
        push_tokens=["tok-a", "tok-b"],
        in_app=True,
    )
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["external_id"] == "u1"
    assert body["email"] == "Ada@example.com"
    assert body["phone"] == "+33612345678"
    assert sorted(body["push_tokens"]) == ["tok-a", "tok-b"]
    assert body["in_app"] is True
    assert ContactPoint.objects.filter(recipient__external_id="u1").count() == 5


def test_upserting_the_same_recipient_twice_changes_nothing(api):
    payload = {"external_id": "u2", "timezone": "Asia/Tokyo", "email": "u2@example.com", "push_tokens": ["t"]}
    first = upsert(api, **payload)
    assert first.status_code == 201
    before = Recipient.objects.get(external_id="u2")
    cps_before = list(ContactPoint.objects.filter(recipient=before).values_list("pk", flat=True))
    second = upsert(api, **payload)
    assert second.status_code == 200
    after = Recipient.objects.get(external_id="u2")
    assert after.updated_at == before.updated_at
    assert list(ContactPoint.objects.filter(recipient=after).values_list("pk", flat=True)) == cps_before
    assert second.json() == first.json()


def test_upsert_updates_changed_fields_and_replaces_contact_points(api):
    upsert(api, external_id="u3", timezone="UTC", email="old@example.com")
    resp = upsert(api, external_id="u3", timezone="America/New_York", email="new@example.com")
    assert resp.status_code == 200
    assert resp.json()["timezone"] == "America/New_York"
    assert resp.json()["email"] == "new@example.com"
    assert ContactPoint.objects.filter(recipient__external_id="u3", channel="email").count() == 1


@pytest.mark.parametrize(
    "body,field",
    [
        ({"timezone": "UTC"}, "external_id"),
        ({"external_id": "", "timezone": "UTC"}, "external_id"),
        ({"external_id": "bad-tz", "timezone": "Mars/Olympus"}, "timezone"),
        ({"external_id": "bad-email", "email": "not-an-email"}, "email"),
        ({"external_id": "bad-phone", "phone": "12345"}, "phone"),
        ({"external_id": "bad-phone2", "phone": "call me maybe"}, "phone"),
        ({"external_id": "bad-pref", "preferences": {"fax": {"promotional": False}}}, "preferences"),
        ({"external_id": "bad-attrs", "attributes": [1, 2]}, "attributes"),
    ],
)
def test_bad_input_is_refused_with_the_field_and_writes_nothing(api, body, field):
    resp = upsert(api, **body)
    assert resp.status_code == 400
    assert field in resp.json(), resp.json()
    assert resp.json()[field][0]
    assert Recipient.objects.count() == 0
    assert ContactPoint.objects.count() == 0


def test_a_bad_field_on_an_existing_recipient_changes_nothing(api):
    upsert(api, external_id="u4", timezone="UTC", email="u4@example.com")
    resp = upsert(api, external_id="u4", timezone="Europe/Paris", email="broken")
    assert resp.status_code == 400
    recipient = Recipient.objects.get(external_id="u4")
    assert recipient.timezone == "UTC"
    assert recipient.contact_points.get().address == "u4@example.com"


def test_get_returns_contact_points_and_preferences(api):
    upsert(api, external_id="u5", email="u5@example.com", preferences={"email": {"promotional": False}})
    resp = api.get(f"{URL}u5/")
    assert resp.status_code == 200
    assert resp.json()["preferences"] == {"email": {"promotional": False}}
    assert resp.json()["contact_points"] == [
        {
            "channel": "email",
            "address": "u5@example.com",
            "opted_in": True,
            "undeliverable_at": None,
            "undeliverable_reason": "",
            "soft_bounces": 0,
        }
    ]


def test_get_unknown_recipient_is_404(api):
    resp = api.get(f"{URL}nobody/")
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"


def test_patch_sets_preferences_and_keeps_other_fields(api):
    upsert(api, external_id="u6", timezone="Asia/Tokyo", email="u6@example.com")
    resp = api.patch(
        f"{URL}u6/",
        {"preferences": {"push": {"engagement": False}, "email": {"promotional": True}}},
        format="json",
    )
    assert resp.status_code == 200, resp.json()
    assert resp.json()["timezone"] == "Asia/Tokyo"
    prefs = {
        (p.channel, p.purpose): p.opted_in for p in Preference.objects.filter(recipient__external_id="u6")
    }
    assert prefs == {("push", "engagement"): False, ("email", "promotional"): True}


def test_patch_unknown_recipient_is_404_and_creates_nothing(api):
    resp = api.patch(f"{URL}ghost/", {"timezone": "UTC"}, format="json")
    assert resp.status_code == 404
    assert not Recipient.objects.exists()


def test_patch_bad_timezone_is_400(api):
    RecipientFactory(external_id="u7")
    resp = api.patch(f"{URL}u7/", {"timezone": "Europe/Atlantis"}, format="json")
    assert resp.status_code == 400
    assert "timezone" in resp.json()
    assert Recipient.objects.get(external_id="u7").timezone == "UTC"


def test_patch_cannot_rename_external_id(api):
    RecipientFactory(external_id="u8")
    resp = api.patch(f"{URL}u8/", {"external_id": "other"}, format="json")
    assert resp.status_code == 400
    assert Recipient.objects.filter(external_id="u8").exists()
