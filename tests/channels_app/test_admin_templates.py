"""Templates in the admin: inline locale variants validated whole, and the preview for a recipient."""

import pytest

from channels_app.models import MessageTemplate
from tests.orchestrator.factories import RecipientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("team", "t@example.com", "pass-12345"))
    return client


def form(**variants):
    data = {
        "key": "welcome",
        "name": "Welcome",
        "channel": "email",
        "purpose": "engagement",
        "default_locale": "en",
        "variants-TOTAL_FORMS": str(len(variants)),
        "variants-INITIAL_FORMS": "0",
        "variants-MIN_NUM_FORMS": "1",
        "variants-MAX_NUM_FORMS": "1000",
    }
    for n, (locale, fields) in enumerate(variants.items()):
        data[f"variants-{n}-locale"] = locale.replace("_", "-")
        for key, value in fields.items():
            data[f"variants-{n}-{key}"] = value
    return data


def test_a_two_locale_template_saves_and_previews_for_a_pt_br_recipient(staff):
    resp = staff.post(
        "/admin/channels_app/messagetemplate/add/",
        form(
            en={
                "subject": "Hi {{ recipient.attributes.name | default: 'there' }}",
                "body": "Welcome aboard.",
            },
            pt_BR={"subject": "Oi {{ recipient.attributes.name | default: 'você' }}", "body": "Boas-vindas."},
        ),
    )
    assert resp.status_code == 302, resp.content.decode()[-3000:]
    template = MessageTemplate.objects.get()
    assert sorted(v.locale for v in template.variants.all()) == ["en", "pt-BR"]
    RecipientFactory(external_id="ana", locale="pt-BR", attributes={"name": "Ana"})
    preview = staff.post(f"/admin/channels_app/messagetemplate/{template.pk}/preview/", {"recipient": "ana"})
    assert preview.status_code == 200
    assert preview.json()["locale"] == "pt-BR" and preview.json()["content"]["subject"] == "Oi Ana"


def test_an_undefined_variable_is_shown_with_locale_and_line_and_nothing_is_saved(staff):
    resp = staff.post(
        "/admin/channels_app/messagetemplate/add/",
        form(en={"subject": "Hi", "body": "Hello\n{{ first_name }}"}),
    )
    assert resp.status_code == 200
    assert "template welcome (en) body line 2: &#x27;first_name&#x27; is undefined" in resp.content.decode()
    assert not MessageTemplate.objects.exists()
