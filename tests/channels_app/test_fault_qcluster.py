"""Fault tests with a real qcluster (and the orchestrate loop as the sweeper) on PostgreSQL.

A provider that fails for a while then recovers: every message is delivered exactly once, none lost.
A provider that never recovers: every message ends failed after the configured attempts, and no
further call is made after that.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count, Q
from django_q.tasks import async_task

from channels_app.delivery import TASK
from channels_app.models import DeliveryAttempt
from orchestrator.models import Channel, Message, MessageStatus

from .factories import AcceptedMessageFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
N = 30


def test_database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


@contextmanager
def cluster(tmp_path: Path, *, sweeper: bool = True, **env_overrides: str):
    """qcluster + `orchestrate` loop subprocesses on the test database (the qcluster alone without
    `sweeper`); always stopped.

    Each runs in its own session, so `crash()` can SIGKILL a whole cluster (workers included)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
        "DATABASE_URL": test_database_url(),
        "CHANNEL_SMS_BACKEND": "tests.channels_app.faulty.FileControlledBackend",
        "FAULT_CONTROL_FILE": str(tmp_path / "control"),
        "FAULT_LOG_FILE": str(tmp_path / "calls.log"),
        "CHANNEL_RETRY_BASE_SECONDS": "0.2",
        "CHANNEL_RETRY_MAX_SECONDS": "0.5",
        "CHANNEL_REDRIVE_AFTER_SECONDS": "1.5",
        "CHANNEL_TASK_BATCH_SIZE": "5",
        "Q_WORKERS": "2",
        "LOG_LEVEL": "WARNING",
        **env_overrides,
    }
    procs = []
    try:
        commands = [(["qcluster"], "qcluster"), (["orchestrate", "--interval", "0.3"], "orchestrate")]
        for args, name in commands if sweeper else commands[:1]:
            out = open(tmp_path / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
            procs.append(
                (
                    subprocess.Popen(
                        [sys.executable, "manage.py", *args],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    ),
                    out,
                )
            )
        yield [proc for proc, _ in procs]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, out in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            kill_group(proc)  # whatever is left of it, workers included
            out.close()


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of a subprocess started in its own session (only what we started)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def crash(proc: subprocess.Popen) -> None:
    """Kill a cluster and its workers at once, as a machine failure would."""
    kill_group(proc)


def wait_for(predicate, *, timeout: float, what: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    logs = "\n".join(
        (tmp_path / f"{n}.log").read_text()[-2000:]
        for n in ("qcluster", "orchestrate")
        if (tmp_path / f"{n}.log").exists()
    )
    raise AssertionError(f"timed out waiting for {what}; statuses={statuses()}\n{logs}")


def statuses() -> dict[str, int]:
    return dict(collections.Counter(Message.objects.values_list("status", flat=True)))


def calls(tmp_path: Path) -> list[tuple[int, str]]:
    log = tmp_path / "calls.log"
    if not log.exists():
        return []
    return [(int(a), b) for a, b in (line.split() for line in log.read_text().splitlines() if line.strip())]


def make_messages() -> list[int]:
    ids = [AcceptedMessageFactory(channel=Channel.SMS).pk for _ in range(N)]
    # Half get a task as the pipeline would; the other half's tasks are "lost": the sweeper must find them.
    for start in range(0, N // 2, 5):
        async_task(TASK, ids[start : start + 5], sync=False)
    return ids


def test_a_provider_that_recovers_gets_every_message_exactly_once(tmp_path):
    (tmp_path / "control").write_text("fail")
    ids = make_messages()
    with cluster(tmp_path, CHANNEL_RETRY_MAX_ATTEMPTS="50"):
        wait_for(
            lambda: Message.objects.filter(pk__in=ids, attempts__gte=2).count() == N,
            timeout=90,
            what="every message to fail at least twice",
            tmp_path=tmp_path,
        )
        (tmp_path / "control").write_text("ok")
        wait_for(
            lambda: Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() == N,
            timeout=90,
            what="every message to be sent",
            tmp_path=tmp_path,
        )
        time.sleep(2)  # stray duplicates and further sweeps would show up now
    successes = collections.Counter(mid for mid, outcome in calls(tmp_path) if outcome == "success")
    assert successes == dict.fromkeys(ids, 1)  # each message handed over exactly once, none lost
    per_message = Message.objects.filter(pk__in=ids).annotate(
        ok=Count("delivery_attempts", filter=Q(delivery_attempts__outcome="success")),
        total=Count("delivery_attempts"),
    )
    assert {m.ok for m in per_message} == {1}
    assert all(m.total == m.attempts for m in per_message)
    assert sum(1 for _ in calls(tmp_path)) == sum(m.total for m in per_message)  # every call recorded


def test_a_provider_that_never_recovers_fails_everything_after_the_configured_attempts(tmp_path):
    (tmp_path / "control").write_text("fail")
    ids = make_messages()
    with cluster(tmp_path, CHANNEL_RETRY_MAX_ATTEMPTS="4"):
        wait_for(
            lambda: Message.objects.filter(pk__in=ids, status=MessageStatus.FAILED).count() == N,
            timeout=120,
            what="every message to end failed",
            tmp_path=tmp_path,
        )
        made = len(calls(tmp_path))
        time.sleep(3)  # several sweeper passes and any stray task would call the provider again
        assert len(calls(tmp_path)) == made
    assert made == N * 4
    assert collections.Counter(mid for mid, _ in calls(tmp_path)) == dict.fromkeys(ids, 4)
    for m in Message.objects.filter(pk__in=ids):
        assert m.attempts == 4 and m.last_error.startswith("Gave up after 4 attempts") and m.failed_at
        assert m.next_attempt_at is None


def test_a_worker_that_dies_mid_call_is_recovered_after_the_lease(tmp_path):
    """The claim outlives its worker; after the lease the sweeper re-drives it and a new cluster
    delivers every message exactly once."""
    (tmp_path / "control").write_text("hang")
    ids = [AcceptedMessageFactory(channel=Channel.SMS).pk for _ in range(4)]
    async_task(TASK, ids, sync=False)
    lease = {"CHANNEL_DELIVERY_LEASE_SECONDS": "3"}
    with cluster(tmp_path, **lease) as (qcluster, _):
        wait_for(
            lambda: DeliveryAttempt.objects.filter(outcome="in_progress").exists(),
            timeout=60,
            what="a worker to claim a message and hang in the provider call",
            tmp_path=tmp_path,
        )
        crash(qcluster)
    (tmp_path / "control").write_text("ok")
    with cluster(tmp_path, **lease):
        wait_for(
            lambda: Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() == len(ids),
            timeout=90,
            what="every message to be sent after the crash",
            tmp_path=tmp_path,
        )
    assert collections.Counter(
        mid for mid, outcome in calls(tmp_path) if outcome == "success"
    ) == dict.fromkeys(ids, 1)
    lost = DeliveryAttempt.objects.filter(response__contains="lease")
    assert lost.count() >= 1 and all(a.outcome == "transient" for a in lost)
    assert not DeliveryAttempt.objects.filter(outcome="in_progress").exists()
