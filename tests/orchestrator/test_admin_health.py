"""The health banner on every admin page: a failed background task, a due-work pass that stalled."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Task

from orchestrator.health import health_problems
from orchestrator.models import WorkHeartbeat
from orchestrator.work import DUE_WORK_PASS, due_work_run

pytestmark = pytest.mark.django_db


def beat(*, ago: timedelta, errors=None) -> None:
    WorkHeartbeat.objects.update_or_create(
        name=DUE_WORK_PASS, defaults={"last_run_at": timezone.now() - ago, "errors": errors or {}}
    )


def banner(admin_client, path="/admin/") -> str:
    html = admin_client.get(path).content.decode()
    if 'id="orch-health"' not in html:
        return ""
    start = html.index('id="orch-health"')
    return html[start : html.index("</div>", start)]


def test_a_due_work_pass_records_its_heartbeat_and_what_failed(settings):
    settings.ORCHESTRATOR = {
        **settings.ORCHESTRATOR,
        "DUE_WORK": ["tests.orchestrator.test_admin_health.boom"],
    }
    now = timezone.now()
    due_work_run(now=now)
    row = WorkHeartbeat.objects.get(name=DUE_WORK_PASS)
    assert row.last_run_at == now and row.last_ok_at is None
    assert (
        "RuntimeError: the provider config is broken"
        in row.errors["tests.orchestrator.test_admin_health.boom"]
    )
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "DUE_WORK": []}
    due_work_run(now=now + timedelta(minutes=1))
    row.refresh_from_db()
    assert row.errors == {} and row.last_ok_at == now + timedelta(minutes=1)


def boom(*, now, limit):
    raise RuntimeError("the provider config is broken")


def test_no_banner_when_the_pass_ran_a_minute_ago(admin_client):
    beat(ago=timedelta(minutes=1))
    assert banner(admin_client) == ""
    assert health_problems(now=timezone.now()) == []


def test_the_banner_says_the_pass_never_ran_on_every_admin_page(admin_client):
    for path in ("/admin/", "/admin/orchestrator/message/", "/admin/governor/governoroverview/"):
        text = banner(admin_client, path)
        assert "never run" in text and "/admin/orchestrator/workheartbeat/" in text, path


def test_the_banner_says_the_pass_stalled_and_links_to_it(admin_client):
    beat(ago=timedelta(minutes=4))
    text = banner(admin_client)
    assert "has not run for 4 minutes" in text
    assert 'href="/admin/orchestrator/workheartbeat/"' in text
    assert admin_client.get("/admin/orchestrator/workheartbeat/").status_code == 200


def test_the_banner_names_the_functions_that_failed_in_the_last_pass(admin_client):
    beat(ago=timedelta(seconds=30), errors={"journeys.scheduler.enrollments_advance_due": "KeyError: 'x'"})
    assert "failed in journeys.scheduler.enrollments_advance_due" in banner(admin_client)


def test_a_failed_django_q_task_shows_with_a_link_to_the_failure(admin_client):
    beat(ago=timedelta(seconds=30))
    now = timezone.now()
    failed = Task.objects.create(
        id="a" * 32,
        name="broken-task",
        func="channels_app.tasks.message_deliver",
        started=now - timedelta(minutes=5),
        stopped=now - timedelta(minutes=5),
        success=False,
        result="Traceback: boom",
    )
    text = banner(admin_client)
    assert "A background task failed" in text and "channels_app.tasks.message_deliver" in text
    assert f'href="/admin/django_q/failure/{failed.pk}/change/"' in text
    # A failure from yesterday is history, not news.
    Task.objects.filter(pk=failed.pk).update(stopped=now - timedelta(days=1))
    assert banner(admin_client) == ""


def test_no_banner_outside_the_admin_nor_for_anonymous_visitors(client):
    assert b"orch-health" not in client.get("/admin/login/").content
