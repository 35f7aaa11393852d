"""The dead-letter page's "Retry now" button: the list action's service, for whoever may retry."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from orchestrator.authority import MESSAGING_TEAM
from orchestrator.models import Message
from tests.conftest import user_with_roles
from tests.orchestrator.factories import MessageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def letter():
    return MessageFactory(
        status="failed", attempts=8, last_error="Gave up after 8 attempts; last error: SMTP 451"
    )


def staff_client(user) -> Client:
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def test_the_team_retries_a_dead_letter_from_its_page(
    django_user_model, letter, django_capture_on_commit_callbacks
):
    team = staff_client(user_with_roles(django_user_model, "tess", MESSAGING_TEAM))
    page = team.get(f"/admin/channels_app/deadletter/{letter.pk}/change/").content.decode()
    assert 'id="retry-now"' in page and f"/admin/channels_app/deadletter/{letter.pk}/retry/" in page
    assert 'name="_save"' not in page  # read-only
    with django_capture_on_commit_callbacks():
        resp = team.post(f"/admin/channels_app/deadletter/{letter.pk}/retry/")
    assert resp.status_code == 302 and resp["Location"] == f"/admin/orchestrator/message/{letter.pk}/change/"
    letter.refresh_from_db()
    assert letter.status != "failed" and letter.last_error.startswith("Retried by an operator")


def test_retrying_twice_says_it_is_no_longer_failed(admin_client, letter, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        admin_client.post(f"/admin/channels_app/deadletter/{letter.pk}/retry/")
    assert admin_client.post(f"/admin/channels_app/deadletter/{letter.pk}/retry/").status_code == 404


def test_a_reader_without_the_permission_gets_no_button_and_a_403(django_user_model, letter):
    reader = django_user_model.objects.create_user("rita", password="x")
    reader.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client = staff_client(reader)
    page = client.get(f"/admin/channels_app/deadletter/{letter.pk}/change/")
    assert page.status_code == 200 and b'id="retry-now"' not in page.content
    assert client.post(f"/admin/channels_app/deadletter/{letter.pk}/retry/").status_code == 403
    assert Message.objects.get(pk=letter.pk).status == "failed"
    # The list action is gone for them too.
    listing = client.get("/admin/channels_app/deadletter/").content.decode()
    assert "retry_now" not in listing


def test_retry_needs_a_post(admin_client, letter):
    assert admin_client.get(f"/admin/channels_app/deadletter/{letter.pk}/retry/").status_code == 405
