import pytest
from django.core.management import call_command
from django_q.models import Schedule

from orchestrator import work

pytestmark = pytest.mark.django_db

calls = []


def fake_due(*, now, limit):
    calls.append((now, limit))
    return 0


def test_due_work_runs_every_registered_function(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "DUE_WORK": ["tests.orchestrator.test_work.fake_due"]}
    calls.clear()
    assert work.due_work_run(limit=7) == {"tests.orchestrator.test_work.fake_due": 0}
    assert calls[0][1] == 7
    call_command("orchestrate", "--once")
    assert len(calls) == 2


def test_a_schedule_runs_the_due_work_pass():
    schedule = Schedule.objects.get(name="orchestrator: due work")
    assert schedule.func == "orchestrator.work.due_work_task" and schedule.repeats == -1
