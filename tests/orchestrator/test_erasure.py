"""DELETE recipients/{external_id}/ (orchestrator.erasure.recipient_erase): after it nothing personal is
left in ANY table — found by scanning every text and JSON column of every table in the database, history
tables included, for marker strings seeded everywhere a person's data can land — while the counts behind
the governor, the journey report and attribution stay exactly what they were."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from channels_app.models import DeliveryAttempt
from journeys.models import Campaign, CampaignRecipient, EnrollmentStatus, MemberState
from orchestrator.authority import MESSAGING_TEAM, SERVICE
from orchestrator.erasure import AlreadyErased, recipient_erase
from orchestrator.models import (
    ContactPoint,
    Erasure,
    Event,
    Message,
    MessageDecision,
    MessageStatus,
    PreferenceChange,
    Recipient,
    Segment,
    Source,
)
from tests.conftest import token_client, user_with_roles
from tests.journeys.factories import ConversionDefinitionFactory, EnrollmentFactory, StepRunFactory, touch
from tests.orchestrator.factories import EventFactory, ReachableRecipientFactory

pytestmark = pytest.mark.django_db

MARKER = "zqxmarker"
PHONE = "+14155550199"
WHO = f"{MARKER}-ada"
EMAIL = f"{MARKER}.ada@example.com"
NEEDLES = (MARKER, PHONE, "4155550199")


def personal_hits(needles=NEEDLES) -> dict[tuple[str, str], int]:
    """{(table, column): rows} holding any needle, over every text/JSON column of every table."""
    hits = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
            " AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')"
        )
        columns = cursor.fetchall()
        for table, column in columns:
            conditions = " OR ".join([f'"{column}"::text ILIKE %s'] * len(needles))
            cursor.execute(f'SELECT count(*) FROM "{table}" WHERE {conditions}', [f"%{n}%" for n in needles])
            found = cursor.fetchone()[0]
            if found:
                hits[(table, column)] = found
    # django-q2 keeps task arguments and results pickled (base64 in a text column): read them unpickled.
    from django_q.models import OrmQ, Task

    for task in Task.objects.all():
        text = repr((task.name, task.args, task.kwargs, task.result)).lower()
        if any(n.lower() in text for n in needles):
            hits[("django_q_task", str(task.pk))] = 1
    for queued in OrmQ.objects.all():
        if any(n.lower() in repr(queued.task()).lower() for n in needles):
            hits[("django_q_ormq", str(queued.pk))] = 1
    return hits


@pytest.fixture
def person(api, django_user_model):
    """A person whose data reached every table that can hold it, mostly through the API."""
    now = timezone.now()
    created = api.post(
        "/api/v1/recipients/",
        {
            "external_id": WHO,
            "timezone": "Europe/Lisbon",
            "locale": "pt-PT",
            "attributes": {"name": f"Ada {MARKER}", "plan": "pro", "seats": 3},
            "email": EMAIL,
            "phone": PHONE,
            "push_tokens": [f"tok-{MARKER}"],
            "in_app": True,
            "preferences": {"email": {"promotional": False}},
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    recipient = Recipient.objects.get(external_id=WHO)
    event = api.post(
        "/api/v1/events/",
        {"recipient": WHO, "name": "purchase", "properties": {"note": MARKER, "amount": 40, "plan": "pro"}},
        format="json",
        HTTP_IDEMPOTENCY_KEY=f"event-{MARKER}",
    )
    assert event.status_code == 201, event.content
    sent = api.post(
        "/api/v1/messages/",
        {
            "recipient": WHO,
            "channel": "email",
            "purpose": "transactional",
            "content": {"subject": f"Your receipt, {MARKER}", "body": f"Hello {MARKER}, ref {PHONE}."},
            "source_ref": f"order-{MARKER}",
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY=f"send-{MARKER}",
    )
    assert sent.status_code == 201, sent.content
    recorded = api.post(
        "/api/v1/messages/record/",
        {
            "recipient": WHO,
            "channel": "email",
            "purpose": "promotional",
            "sent_at": (now - timedelta(hours=3)).isoformat(),
            "source_system": "esp",
            "external_id": f"esp-{MARKER}",
            "content": {"subject": f"News for {MARKER}", "body": "..."},
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY=f"record-{MARKER}",
    )
    assert recorded.status_code == 201, recorded.content
    message = Message.objects.get(pk=sent.json()["id"])
    Message.objects.filter(pk=message.pk).update(
        to_address=EMAIL, last_error=f"550 {EMAIL} bounced", reason=f"Cleared for {EMAIL}"
    )
    MessageDecision.objects.create(message=message, at=now, outcome="accepted", reason=f"{EMAIL} reachable")
    DeliveryAttempt.objects.create(
        message=message, number=9, provider="smtp", response=f"250 OK queued for {EMAIL}", started_at=now
    )
    PreferenceChange.objects.create(
        recipient=recipient,
        channel="sms",
        address=PHONE,
        kind="stop",
        opted_in=False,
        source="provider",
        detail=f"STOP from {PHONE}",
    )
    # A journey run: converted, with a step run and free text naming the person.
    enrollment = EnrollmentFactory(
        recipient=recipient,
        status=EnrollmentStatus.CONVERTED,
        entered_at=now - timedelta(days=1),
        converted_at=now - timedelta(hours=1),
        ended_at=now - timedelta(hours=1),
        exit_reason=f"goal reached by {WHO}",
        error=f"earlier: {EMAIL} refused",
    )
    step_message = touch(
        recipient,
        "push",
        now - timedelta(hours=5),
        source=Source.JOURNEY,
        source_ref=f"{enrollment.journey.slug} · nudge",
        content={"title": f"Hi {MARKER}"},
    )
    StepRunFactory(enrollment=enrollment, message=step_message, detail=f"sent to tok-{MARKER}")
    active = EnrollmentFactory(recipient=recipient, journey=enrollment.journey, version=enrollment.version)
    campaign = Campaign.objects.create(
        name="Spring", segment=Segment.objects.create(name="All"), channel="email", purpose="promotional"
    )
    CampaignRecipient.objects.create(
        campaign=campaign, recipient=recipient, due_at=now, state="refused", detail=f"{EMAIL} unreachable"
    )
    later = Campaign.objects.create(
        name="Summer", segment=Segment.objects.get(name="All"), channel="email", purpose="promotional"
    )
    CampaignRecipient.objects.create(campaign=later, recipient=recipient, due_at=now + timedelta(days=1))
    deferred = touch(recipient, "email", now, status=MessageStatus.DEFERRED, content={"body": MARKER})
    LogEntry.objects.log_actions(
        user_id=django_user_model.objects.get(username="service").pk,
        queryset=[recipient],
        action_flag=CHANGE,
        change_message=f'[{{"changed": {{"name": "contact point", "object": "Email: {EMAIL}"}}}}]',
        single_object=True,
    )
    cp = ContactPoint.objects.filter(recipient=recipient, channel="email").first()
    LogEntry.objects.create(
        user_id=django_user_model.objects.get(username="service").pk,
        content_type=ContentType.objects.get_for_model(ContactPoint),
        object_id=str(cp.pk),
        object_repr=str(cp),
        action_flag=CHANGE,
    )
    return {"recipient": recipient, "active": active, "deferred": deferred, "enrollment": enrollment}


def test_the_scan_finds_the_person_everywhere_before_erasure(person):
    tables = {table for table, _ in personal_hits()}
    for table in (
        "orchestrator_recipient",
        "orchestrator_contactpoint",
        "orchestrator_event",
        "orchestrator_message",
        "orchestrator_messagedecision",
        "orchestrator_idempotencykey",
        "orchestrator_preferencechange",
        "channels_app_deliveryattempt",
        "journeys_enrollment",
        "journeys_steprun",
        "journeys_campaignrecipient",
        "django_admin_log",
    ):
        assert table in tables, table


def test_after_erasure_nothing_personal_is_left_in_any_table(api, person):
    assert api.delete(f"/api/v1/recipients/{WHO}/").status_code == 204
    assert personal_hits() == {}
    erasure = Erasure.objects.get()
    recipient = Recipient.objects.get(pk=person["recipient"].pk)
    assert recipient.external_id == erasure.token and erasure.token.startswith("erased-")
    assert recipient.erased_at is not None and recipient.attributes == {} and recipient.timezone == "UTC"
    assert not recipient.contact_points.exists() and not recipient.preferences.exists()


def test_erasure_keeps_what_measurement_reads_and_stops_what_was_running(api, person):
    recipient = person["recipient"]
    assert api.delete(f"/api/v1/recipients/{WHO}/").status_code == 204
    purchase = Event.objects.get(recipient=recipient, name="purchase")
    # Only what a definition or a goal reads stays (here: no definition, so nothing).
    assert purchase.properties == {}
    person["active"].refresh_from_db()
    assert person["active"].status == EnrollmentStatus.EXITED and person["active"].next_run_at is None
    person["deferred"].refresh_from_db()
    assert person["deferred"].status == MessageStatus.SUPPRESSED
    states = set(CampaignRecipient.objects.filter(recipient=recipient).values_list("state", flat=True))
    assert states == {"refused", MemberState.CANCELLED}


def report_numbers(api, slug: str) -> tuple[dict, dict, dict]:
    today = timezone.now().date()
    params = {"from": str(today - timedelta(days=3)), "to": str(today + timedelta(days=1))}
    journey = api.get(f"/api/v1/journeys/{slug}/report/", params)
    assert journey.status_code == 200, journey.content
    attribution = api.get("/api/v1/reports/attribution/", params)
    assert attribution.status_code == 200, attribution.content
    counts = dict(Message.objects.values_list("status").order_by("status").annotate(n=Count("id")))
    return journey.json(), attribution.json(), counts


def test_reports_add_up_the_same_after_erasure(api, person):
    ConversionDefinitionFactory(name="Pro purchases", event="purchase", property_filter={"plan": "pro"})
    other = ReachableRecipientFactory()
    now = timezone.now()
    touch(other, "email", now - timedelta(hours=2))
    EventFactory(recipient=other, name="purchase", properties={"amount": 10, "plan": "pro"}, occurred_at=now)
    slug = person["enrollment"].journey.slug
    before = report_numbers(api, slug)
    assert api.delete(f"/api/v1/recipients/{WHO}/").status_code == 204
    after = report_numbers(api, slug)
    # The still-running enrollment was exited: the only change a report may show is in its status.
    assert after[1] == before[1]
    journey_before, journey_after = dict(before[0]), dict(after[0])
    for key in (
        "enrolled",
        "converted",
        "conversion_rate",
        "value",
        "touch_sequences",
        "sequences",
        "funnel",
    ):
        assert key in journey_before, key
        assert journey_after[key] == journey_before[key], key
    for key in ("attribution", "holdout"):
        assert journey_after.get(key) == journey_before.get(key), key
    assert (journey_before["active"], journey_after["active"]) == (1, 0)
    assert before[1]["conversions"] == 2 and before[1]["value"] == 50.0  # the erased person's 40 included
    counts_before = dict(before[2])
    # What was still waiting (accepted, not yet sent; deferred) is suppressed: an erased person gets nothing.
    waiting = counts_before.pop("deferred", 0) + counts_before.pop("accepted", 0)
    counts_before["suppressed"] = counts_before.get("suppressed", 0) + waiting
    assert after[2] == counts_before
    purchase = Event.objects.get(recipient=person["recipient"], name="purchase")
    assert purchase.properties == {"amount": 40, "plan": "pro"}  # read by the definition: kept, not personal


def test_erasure_is_audited_with_who_and_the_token_only(api, person, django_user_model):
    assert api.delete(f"/api/v1/recipients/{WHO}/").status_code == 204
    erasure = Erasure.objects.get()
    assert erasure.erased_by.username == "service"
    assert erasure.via == f"api: token {api.token.name}"
    record = erasure.history.get()
    assert record.history_type == "+" and record.history_user.username == "service"
    assert record.history_source == "api"
    assert erasure.counts["contact_points"] == 4 and erasure.counts["messages"] >= 4


def test_unknown_and_repeated_erasure_are_404_and_the_id_can_be_used_again(api, person):
    assert api.delete("/api/v1/recipients/nobody/").status_code == 404
    assert api.delete(f"/api/v1/recipients/{WHO}/").status_code == 204
    assert api.delete(f"/api/v1/recipients/{WHO}/").status_code == 404
    token = Erasure.objects.get().token
    assert api.delete(f"/api/v1/recipients/{token}/").status_code == 404
    assert api.get(f"/api/v1/recipients/{token}/").status_code == 404
    # The anonymous row takes nothing personal again.
    again = api.post("/api/v1/recipients/", {"external_id": token, "email": EMAIL}, format="json")
    assert again.status_code == 400 and "external_id" in again.json()
    # The person's own id is free: a new, empty recipient.
    fresh = api.post("/api/v1/recipients/", {"external_id": WHO}, format="json")
    assert fresh.status_code == 201 and fresh.json()["email"] is None
    with pytest.raises(AlreadyErased):
        recipient_erase(recipient=person["recipient"], at=timezone.now())


def test_erasure_needs_its_own_scope_and_the_role(django_user_model, person):
    service = user_with_roles(django_user_model, "svc", SERVICE)
    writer = token_client(service, scopes=["recipients:read", "recipients:write"])
    response = writer.delete(f"/api/v1/recipients/{WHO}/")
    assert response.status_code == 403 and response.json()["code"] == "missing_scope"
    assert "recipients:erase" in response.json()["detail"]
    owner = user_with_roles(django_user_model, "owner", "Channel owner", channels=["email"])
    response = token_client(owner, scopes=["recipients:erase"]).delete(f"/api/v1/recipients/{WHO}/")
    assert response.status_code == 403 and response.json()["code"] == "missing_permission"
    assert Recipient.objects.filter(external_id=WHO).exists()
    team = user_with_roles(django_user_model, "lead", MESSAGING_TEAM)
    assert (
        token_client(team, scopes=["recipients:erase"]).delete(f"/api/v1/recipients/{WHO}/").status_code
        == 204
    )


def test_the_command_erases_and_says_the_token(person):
    out = StringIO()
    call_command("erase_recipient", WHO, "--yes", stdout=out)
    erasure = Erasure.objects.get()
    assert erasure.token in out.getvalue() and WHO not in out.getvalue()
    assert erasure.via == "command: erase_recipient"
    assert personal_hits() == {}


def test_the_admin_action_asks_first_then_erases_as_the_admin(client, django_user_model, person):
    lead = user_with_roles(django_user_model, "lead", MESSAGING_TEAM)
    lead.is_staff = True
    lead.save()
    client.force_login(lead)
    url = "/admin/orchestrator/recipient/"
    form = {"action": "erase_selected", "_selected_action": [person["recipient"].pk]}
    asked = client.post(url, form)
    assert asked.status_code == 200 and b"Yes, erase them" in asked.content and WHO.encode() in asked.content
    assert not Erasure.objects.exists()
    done = client.post(url, {**form, "confirm": "yes"})
    assert done.status_code == 302
    erasure = Erasure.objects.get()
    assert erasure.erased_by == lead and erasure.via == "admin"
    assert personal_hits() == {}


def test_the_admin_action_is_offered_only_with_the_permission(client, django_user_model, person):
    owner = user_with_roles(django_user_model, "owner", "Channel owner", channels=["email"])
    owner.is_staff = True
    owner.save()
    owner.user_permissions.add(*Permission.objects.filter(codename__in=["view_recipient"]))
    client.force_login(owner)
    page = client.get("/admin/orchestrator/recipient/")
    assert page.status_code == 200 and b"erase_selected" not in page.content
    refused = client.post(
        "/admin/orchestrator/recipient/",
        {"action": "erase_selected", "_selected_action": [person["recipient"].pk], "confirm": "yes"},
    )
    assert refused.status_code in (200, 302) and not Erasure.objects.exists()


def test_erased_people_leave_segments_and_take_no_events(api, person):
    everyone = api.post("/api/v1/segments/", {"name": "Everyone", "conditions": []}, format="json")
    assert everyone.status_code == 201, everyone.content
    preview = f"/api/v1/segments/{everyone.json()['id']}/preview/"
    assert WHO in api.get(preview).json()["sample"]
    assert api.delete(f"/api/v1/recipients/{WHO}/").status_code == 204
    token = Erasure.objects.get().token
    assert token not in api.get(preview).json()["sample"]
    assert (
        api.post("/api/v1/events/", {"recipient": token, "name": "app_open"}, format="json").status_code
        == 404
    )


def test_a_patch_racing_an_erasure_is_a_404(api, person, monkeypatch):
    from orchestrator.api import views

    read = views.recipient_get_or_404

    def read_then_erased(external_id):
        recipient = read(external_id)
        recipient_erase(recipient=recipient, at=timezone.now())  # another request erased it meanwhile
        return recipient

    monkeypatch.setattr(views, "recipient_get_or_404", read_then_erased)
    response = api.patch(f"/api/v1/recipients/{WHO}/", {"locale": ""}, format="json")
    assert response.status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_batch_does_not_send_to_a_recipient_erased_after_its_reachability_was_read(monkeypatch):
    """A journey or campaign batch reads reachability (and the address) before the governor locks the
    recipients: an erasure committed in between is seen under the lock, and nothing is written for that
    recipient — no message that would carry the address the erasure removed."""
    import orchestrator.pipeline as pipeline
    from orchestrator.pipeline import SendRefused, SendRequest, messages_send_bulk

    people = ReachableRecipientFactory.create_batch(3)
    gone = people[1]
    address = ContactPoint.objects.get(recipient=gone, channel="email").address
    real = pipeline.messages_decide

    def erase_first(*, drafts, at):  # the erasure commits after the drafts were made, before the lock
        recipient_erase(recipient=gone, at=timezone.now())
        return real(drafts=drafts, at=at)

    monkeypatch.setattr(pipeline, "messages_decide", erase_first)
    results = messages_send_bulk(
        requests=[
            SendRequest(
                recipient_id=p.pk,
                channel="email",
                purpose="transactional",
                content={"subject": "Your receipt", "body": "Thanks."},
                source=Source.CAMPAIGN,
            )
            for p in people
        ],
        at=timezone.now(),
    )
    assert isinstance(results[1], SendRefused)
    assert results[1].errors["recipient"][0]["code"] == "unknown_recipient"
    assert [r.status for r in (results[0], results[2])] == ["accepted", "accepted"]
    assert not Message.objects.filter(recipient=gone).exists()
    assert not Message.objects.filter(to_address=address).exists()
