"""Liquid templates: locale fallback, defaults, the sandbox, strict authoring with the lint on every
rendered variant, and the templates/ API."""

import pytest

from channels_app.models import MessageTemplate, TemplateVariant
from channels_app.services import template_create
from channels_app.templating import (
    ENV,
    CompiledTemplate,
    TemplateInvalid,
    content_render,
    locale_choose,
    locale_normalize,
    templates_compiled,
)
from tests.journeys.conftest import clock, committed  # noqa: F401
from tests.orchestrator.factories import RecipientFactory

URL = "/api/v1/templates/"
WELCOME = {
    "key": "welcome",
    "channel": "email",
    "purpose": "engagement",
    "default_locale": "en",
    "locales": {
        "en": {
            "subject": "Welcome, {{ recipient.attributes.first_name | default: 'there' }}",
            "body": "Hi {{ recipient.attributes.first_name | default: 'there' }}, plan: {{ data.plan }}.",
        },
        "pt": {
            "subject": "Bem-vindo",
            "body": "Olá {{ recipient.attributes.first_name | default: 'você' }}!",
        },
        "pt-BR": {
            "subject": "Boas-vindas, {{ recipient.attributes.first_name | default: 'você' }}",
            "body": "Oi {{ recipient.attributes.first_name | default: 'você' }}! Seu plano: {{ data.plan }}.",
        },
    },
}


def compiled_from(
    sources: dict[str, dict[str, str]], default: str = "en", key: str = "t"
) -> CompiledTemplate:
    """A compiled template straight from Liquid sources (no authoring checks): what the renderer faces."""
    return CompiledTemplate(
        id=0,
        key=key,
        channel="email",
        purpose="",
        default_locale=default,
        revision=1,
        variants={
            loc: {name: ENV.from_string(src) for name, src in fields.items()}
            for loc, fields in sources.items()
        },
        sources=sources,
    )


def person(locale="en", **attributes):
    return {"external_id": "p1", "locale": locale, "timezone": "UTC", "attributes": attributes}


# ---- locales ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wanted,available,expected",
    [
        ("pt-BR", ["en", "pt", "pt-BR"], "pt-BR"),
        ("pt-BR", ["en", "pt"], "pt"),
        ("pt-PT", ["en", "pt-BR"], "en"),
        ("pt_br", ["en", "pt-BR"], "pt-BR"),
        ("PT-br", ["en", "pt"], "pt"),
        ("ja-JP", ["en", "pt"], "en"),
        ("", ["en", "pt"], "en"),
        ("zh-Hant-TW", ["en", "zh-Hant"], "zh-Hant"),
    ],
)
def test_the_variant_falls_back_from_region_to_language_to_the_default(wanted, available, expected):
    assert locale_choose(wanted=wanted, available=available, default="en") == expected


def test_locale_tags_are_normalised():
    assert locale_normalize("pt_br") == "pt-BR"
    assert locale_normalize("EN") == "en"
    assert locale_normalize("zh-hant-tw") == "zh-Hant-TW"


@pytest.mark.django_db
def test_a_pt_br_recipient_gets_pt_br_then_pt_then_the_default():
    template_create(data=WELCOME)
    compiled = templates_compiled(keys=["welcome"])["welcome"]
    br = content_render(compiled=compiled, recipient=person("pt-BR", first_name="Ana"), data={"plan": "Pro"})
    assert br.locale == "pt-BR" and br.content["body"] == "Oi Ana! Seu plano: Pro."
    pt = content_render(compiled=compiled, recipient=person("pt-PT", first_name="Rui"), data={"plan": "Pro"})
    assert pt.locale == "pt" and pt.content["body"] == "Olá Rui!"
    ja = content_render(compiled=compiled, recipient=person("ja-JP"), data={"plan": "Free"})
    assert ja.locale == "en" and ja.content["subject"] == "Welcome, there"


# ---- defaults and safe rendering ----------------------------------------------------------------------


def test_a_missing_value_renders_its_default():
    t = compiled_from({"en": {"body": "Hi {{ recipient.attributes.first_name | default: 'there' }}!"}})
    assert content_render(compiled=t, recipient=person()).content == {"body": "Hi there!"}
    assert content_render(compiled=t, recipient=person(first_name="Ada")).content == {"body": "Hi Ada!"}


def test_a_missing_value_without_default_refuses_that_message_with_a_reason():
    t = compiled_from(
        {"en": {"subject": "Order", "body": "Line one\nYour order {{ data.order_id }} shipped."}}
    )
    rendered = content_render(compiled=t, recipient=person(), data={})
    assert not rendered.ok and rendered.content == {}
    problem = rendered.problem
    assert (problem.field, problem.line, problem.code) == ("body", 2, "template_missing_value")
    assert "data.order_id is undefined" in problem.reason
    assert "{{" not in str(rendered.content)


def test_a_failing_filter_refuses_instead_of_crashing():
    t = compiled_from({"en": {"body": "{{ data.total | divided_by: data.count }}"}})
    rendered = content_render(compiled=t, recipient=person(), data={"total": 10, "count": 0})
    assert not rendered.ok and "divide by 0" in rendered.problem.reason


# ---- the sandbox ----------------------------------------------------------------------------------------


def test_reaching_outside_the_context_renders_nothing_and_is_reported():
    t = compiled_from(
        {
            "en": {
                "body": "[{{ recipient.__class__.__mro__ }}][{{ data.__globals__ }}]"
                "[{{ recipient.attributes.x }}]"
            }
        }
    )
    rendered = content_render(compiled=t, recipient=person(x="ok"), data={"_note": "fine"})
    assert rendered.ok and rendered.content["body"] == "[][][ok]"
    assert rendered.sandbox == ["data.__globals__", "recipient.__class__"]


def test_python_objects_in_the_context_expose_no_attributes():
    class Secretive:
        password = "hunter2"

    t = compiled_from({"en": {"body": "x{{ data.obj.password | default: '' }}x"}})
    assert content_render(compiled=t, recipient=person(), data={"obj": Secretive()}).content == {"body": "xx"}


def test_loops_and_output_are_bounded():
    loop = compiled_from({"en": {"body": "{% for i in (1..100000) %}x{% endfor %}"}})
    rendered = content_render(compiled=loop, recipient=person())
    assert not rendered.ok and rendered.problem.code == "template_limit"
    big = compiled_from({"en": {"body": "{% for i in (1..900) %}{{ data.s }}{% endfor %}"}})
    rendered = content_render(compiled=big, recipient=person(), data={"s": "y" * 500})
    assert not rendered.ok and rendered.problem.code == "template_limit"


@pytest.mark.django_db
def test_authoring_refuses_a_reach_outside_the_context_and_partials():
    bad = {**WELCOME, "locales": {"en": {"subject": "Hi", "body": "{{ recipient.__class__ }}"}}}
    with pytest.raises(TemplateInvalid) as exc:
        template_create(data=bad)
    assert exc.value.problems[0].code == "template_sandbox"
    include = {**WELCOME, "locales": {"en": {"subject": "Hi", "body": "{% include 'secrets' %}"}}}
    with pytest.raises(TemplateInvalid) as exc:
        template_create(data=include)
    assert exc.value.problems[0].code == "template_syntax"
    assert not MessageTemplate.objects.exists()


# ---- authoring: strict, with the lint on every rendered variant ----------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,code,line,words",
    [
        ("Hi {{ first_name }}!", "template_undefined", 1, "'first_name' is undefined"),
        ("Hi\n{{ recipient.first_name }}", "template_undefined", 2, "recipient.first_name"),
        ("Line 1\nLine 2 {% if data.x %}", "template_syntax", 2, "endif"),
        ("Hi {{ data.x | shout }}", "template_unknown_filter", 1, "unknown filter 'shout'"),
        ("Hi {{ data.x ", "template_syntax", 1, "expected"),
    ],
)
def test_authoring_errors_name_the_template_locale_line_and_reason(api, body, code, line, words):
    payload = {**WELCOME, "locales": {**WELCOME["locales"], "pt-BR": {"subject": "Oi", "body": body}}}
    resp = api.post(URL, payload, format="json")
    assert resp.status_code == 400, resp.json()
    error = resp.json()["errors"][0]
    assert error["template"] == "welcome" and error["locale"] == "pt-BR" and error["field"] == "body"
    assert error["line"] == line and error["code"] == code and words in error["reason"], error
    assert not MessageTemplate.objects.exists() and not TemplateVariant.objects.exists()


@pytest.mark.django_db
def test_the_lint_judges_every_rendered_variant_at_authoring_time(api):
    push = {
        "key": "back-in-stock",
        "channel": "push",
        "purpose": "engagement",
        "default_locale": "en",
        "locales": {
            "en": {"title": "Back: {{ data.product }}", "body": "Tap to see it.", "action_url": "app://p"},
            "de": {
                "title": "Wieder da: {{ data.product }} — jetzt in allen Größen und Farben, schnell!",
                "body": "Tippen.",
                "action_url": "app://p",
            },
        },
    }
    resp = api.post(URL, push, format="json")
    assert resp.status_code == 400, resp.json()
    errors = resp.json()["errors"]
    assert [(e["locale"], e["code"]) for e in errors] == [("de", "push_too_long")]
    push["locales"].pop("de")
    resp = api.post(URL, push, format="json")
    assert resp.status_code == 201, resp.json()
    assert resp.json()["previews"]["en"]["content"]["title"] == "Back: product"


# ---- the API ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_read_patch_and_preview_for_a_pt_br_recipient(api):
    created = api.post(URL, WELCOME, format="json")
    assert created.status_code == 201, created.json()
    assert set(created.json()["locales"]) == {"en", "pt", "pt-BR"}
    assert api.get(f"{URL}welcome/").json()["default_locale"] == "en"
    assert [t["key"] for t in api.get(URL).json()["results"]] == ["welcome"]

    RecipientFactory(external_id="ana", locale="pt-BR", attributes={"first_name": "Ana"})
    preview = api.post(f"{URL}welcome/preview/", {"recipient": "ana", "data": {"plan": "Pro"}}, format="json")
    assert preview.status_code == 200, preview.json()
    body = preview.json()
    assert body["locale"] == "pt-BR" and body["ok"] is True
    assert body["content"] == {"subject": "Boas-vindas, Ana", "body": "Oi Ana! Seu plano: Pro."}
    assert body["lint"] == []

    missing = api.post(f"{URL}welcome/preview/", {"recipient": "ana"}, format="json").json()
    assert missing["ok"] is False and missing["error"]["code"] == "template_missing_value"
    assert missing["error"]["locale"] == "pt-BR" and missing["error"]["field"] == "body"

    patched = api.patch(
        f"{URL}welcome/",
        {"locales": {"en": {"subject": "Hello", "body": "Hi."}}, "default_locale": "en"},
        format="json",
    )
    assert patched.status_code == 200, patched.json()
    assert patched.json()["revision"] == 2 and set(patched.json()["locales"]) == {"en"}
    again = api.post(f"{URL}welcome/preview/", {"recipient": "ana"}, format="json").json()
    assert again["locale"] == "en" and again["content"] == {"subject": "Hello", "body": "Hi."}


@pytest.mark.django_db
def test_a_preview_lints_the_content_rendered_for_that_recipient(api):
    template = {
        "key": "restock",
        "channel": "push",
        "purpose": "engagement",
        "default_locale": "en",
        "locales": {"en": {"title": "{{ data.product }} is back", "body": "Tap.", "action_url": "app://p"}},
    }
    assert api.post(URL, template, format="json").status_code == 201
    RecipientFactory(external_id="bo")
    long_name = "The Extraordinarily Comfortable Walking Shoe, Limited Edition"
    body = api.post(
        f"{URL}restock/preview/", {"recipient": "bo", "data": {"product": long_name}}, format="json"
    ).json()
    assert body["ok"] is True and "push_too_long" in [item["code"] for item in body["lint"]]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change,field",
    [
        ({"key": "bad key!"}, "key"),
        ({"channel": "fax"}, "channel"),
        ({"purpose": "spam"}, "purpose"),
        ({"default_locale": "fr"}, "default_locale"),
        ({"locales": {}}, "locales"),
        ({"locales": ["en"]}, "locales"),
        ({"locales": {"english!": {"body": "x"}}}, "locales"),
        ({"locales": {"en": {"body": "x", "footer": "y"}}}, "locales.en"),
        ({"locales": {"en": {"body": 5}}}, "locales.en.body"),
        ({"locales": {"en": {"body": "x\x00y"}}}, "locales.en.body"),
        ({"locales": {"en": {"body": "x" * 20_001}}}, "locales.en.body"),
        ({"locales": {"en": {"body": ""}}}, "locales.en"),
    ],
)
def test_bad_template_input_is_400_with_the_field_and_writes_nothing(api, change, field):
    resp = api.post(URL, {**WELCOME, **change}, format="json")
    assert resp.status_code == 400, resp.json()
    assert field in resp.json(), resp.json()
    assert not MessageTemplate.objects.exists()


@pytest.mark.django_db
def test_template_edge_requests(api):
    assert api.post(URL, [WELCOME], format="json").status_code == 400
    assert api.get(f"{URL}nope/").status_code == 404
    assert api.post(f"{URL}nope/preview/", {"recipient": "x"}, format="json").status_code == 404
    assert api.post(URL, WELCOME, format="json").status_code == 201
    assert api.post(URL, WELCOME, format="json").status_code == 400  # key taken
    assert api.post(f"{URL}welcome/preview/", {"recipient": "ghost"}, format="json").status_code == 404
    assert api.post(f"{URL}welcome/preview/", {}, format="json").status_code == 400
    resp = api.patch(f"{URL}welcome/", {"key": "other"}, format="json")
    assert resp.status_code == 400 and "key" in resp.json()
    resp = api.patch(f"{URL}welcome/", {"locales": {"en": {"body": "{{ nope }}"}}}, format="json")
    assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == "template_undefined"
    assert MessageTemplate.objects.get().revision == 1  # nothing half-written


# ---- one render per distinct set of values in a batch ----------------------------------------------------


def test_a_batch_renders_each_distinct_set_of_values_once_and_never_mixes_them_up():
    from channels_app.templating import RenderMemo, _reads, _union

    sources = {
        "en": {
            "title": "Hi {{ recipient.attributes.name | default: 'there' }}",
            "body": "{{ data.items.size }} items; vip {{ recipient.attributes.vip }}",
        }
    }
    t = compiled_from(sources)
    t.variant_reads.update(
        {loc: _union(_reads(bound) for bound in fields.values()) for loc, fields in t.variants.items()}
    )
    memo = RenderMemo()
    people = [
        (person(name="Ana", vip=True), {"items": [1, 2]}),
        (person(name="Ana", vip=True), {"items": [1, 2]}),
        (person(name="Ana", vip=1), {"items": [1, 2]}),
        (person(name="Bo", vip=True), {"items": [1, 2, 3]}),
        (person(vip=True), {"items": []}),
    ]
    rendered = [content_render(compiled=t, recipient=r, data=d, memo=memo).content for r, d in people]
    assert rendered == [
        {"title": "Hi Ana", "body": "2 items; vip true"},
        {"title": "Hi Ana", "body": "2 items; vip true"},
        {"title": "Hi Ana", "body": "2 items; vip 1"},
        {"title": "Hi Bo", "body": "3 items; vip true"},
        {"title": "Hi there", "body": "0 items; vip true"},
    ]
    assert memo.hits == 1  # the second Ana; the third reads vip 1, not true


# ---- used from POST messages/ and journey send steps ------------------------------------------------------


@pytest.fixture
def restock(db):
    return template_create(
        data={
            "key": "restock",
            "channel": "push",
            "purpose": "engagement",
            "default_locale": "en",
            "locales": {
                "en": {
                    "title": "{{ data.product }} is back",
                    "body": "Tap to see it.",
                    "action_url": "app://p",
                },
                "pt-BR": {
                    "title": "{{ data.product }} voltou",
                    "body": "Toque para ver.",
                    "action_url": "app://p",
                },
            },
        }
    )


@pytest.mark.django_db
def test_post_messages_with_a_template_renders_it_for_the_recipient(api, restock):
    from orchestrator.models import Message
    from tests.orchestrator.factories import ReachableRecipientFactory

    ReachableRecipientFactory(external_id="ana", locale="pt-BR", timezone="UTC")
    body = {"recipient": "ana", "channel": "push", "purpose": "engagement", "template": "restock"}
    resp = api.post("/api/v1/messages/", {**body, "data": {"product": "Tênis"}}, format="json")
    assert resp.status_code == 201, resp.json()
    assert Message.objects.get(pk=resp.json()["id"]).content == {
        "title": "Tênis voltou",
        "body": "Toque para ver.",
        "action_url": "app://p",
    }


@pytest.mark.django_db
def test_the_lint_catches_a_variable_that_makes_a_push_too_long_at_send_time(api, restock):
    from orchestrator.models import Message
    from tests.orchestrator.factories import ReachableRecipientFactory

    ReachableRecipientFactory(external_id="bo", locale="en", timezone="UTC")
    body = {"recipient": "bo", "channel": "push", "purpose": "engagement", "template": "restock"}
    long_name = "The Extraordinarily Comfortable Walking Shoe, Limited Edition in Every Colour"
    resp = api.post("/api/v1/messages/", {**body, "data": {"product": long_name}}, format="json")
    assert resp.status_code == 400, resp.json()
    assert "push_too_long" in resp.json()["codes"] and "content" in resp.json()
    missing = api.post("/api/v1/messages/", body, format="json")
    assert missing.status_code == 400 and "template_missing_value" in missing.json()["codes"]
    assert "template restock (en) title line 1: data.product is undefined" in missing.json()["template"][0]
    both = api.post("/api/v1/messages/", {**body, "content": {"title": "x", "body": "y"}}, format="json")
    assert both.status_code == 400 and "content" in both.json()
    unknown = api.post("/api/v1/messages/", {**body, "template": "nope"}, format="json")
    assert unknown.status_code == 400 and "unknown_template" in unknown.json()["codes"]
    nul = api.post("/api/v1/messages/", {**body, "data": {"product": "a\x00b"}}, format="json")
    assert nul.status_code == 400 and "data.product" in nul.json()  # refused at the door: no NUL anywhere
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_a_journey_send_step_renders_its_template_with_the_journey_and_the_trigger_event(
    restock,
    committed,  # noqa: F811
    clock,  # noqa: F811
):
    from journeys.services import journey_create, journey_transition
    from orchestrator.models import Message
    from orchestrator.services import event_ingest
    from tests.orchestrator.factories import ReachableRecipientFactory

    template_create(
        data={
            "key": "cart-nudge",
            "channel": "push",
            "purpose": "engagement",
            "default_locale": "en",
            "locales": {
                "en": {
                    "title": "{{ event.properties.item | default: 'Your cart' }} is waiting",
                    "body": "From {{ journey.name }}.",
                    "action_url": "app://cart",
                }
            },
        }
    )
    definition = {
        "slug": "nudge",
        "name": "Cart nudge",
        "trigger": {"event": "cart_abandoned"},
        "steps": [
            {
                "id": "push",
                "type": "send",
                "channel": "push",
                "purpose": "engagement",
                "template": "cart-nudge",
            }
        ],
    }
    journey = journey_create(definition=definition, now=clock.now)
    for action in ("propose", "approve", "activate"):
        journey = journey_transition(journey=journey, action=action, now=clock.now)
    recipient = ReachableRecipientFactory(timezone="UTC")
    committed(event_ingest, recipient=recipient, name="cart_abandoned", properties={"item": "The red scarf"})
    message = Message.objects.get(recipient=recipient)
    assert (
        message.content["title"] == "The red scarf is waiting"
        and message.content["body"] == "From Cart nudge."
    )
