"""The database drops connections mid-load (`pg_terminate_backend` of the server's and the workers'
connections, repeatedly) while clients send through a real gunicorn: every answer is 201 or 503 (with
Retry-After, never a 500), a client retrying a 503 with the same Idempotency-Key gets its 201, nothing is
lost or doubled, and every message is handed to its provider within a minute (tasks that failed on a
lost connection are re-driven by the sweeper after the short delivery lease)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import suppress

import psycopg
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from orchestrator.models import Message, MessageStatus
from tests.orchestrator.factories import ReachableRecipientFactory

from .servers import ROOT, gunicorn, server_env, test_database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLIENTS, SENDS_PER_CLIENT = 6, 12
WEB, WORKER = "orch-fault-web", "orch-fault-worker"


def _send(url: str, token: str, body: dict, key: str) -> tuple[int, dict, str]:
    request = urllib.request.Request(
        f"{url}/api/v1/messages/",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Token {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), ""
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers.get("Retry-After", "")


def _terminator(stop: threading.Event, killed: list[int], rounds: int = 30) -> None:
    """Every 150 ms for `rounds` rounds (mid-load), end every backend of the server and the workers (not
    the test's own)."""
    dsn = connection.settings_dict
    with psycopg.connect(
        host=dsn["HOST"] or "127.0.0.1",
        port=dsn["PORT"] or 5432,
        user=dsn["USER"],
        dbname=dsn["NAME"],
        autocommit=True,
    ) as conn:
        while len(killed) < rounds and not stop.wait(0.15):
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = ANY(%s)",
                [[WEB, WORKER]],
            ).fetchall()
            killed.append(len(rows))


def test_lost_connections_answer_503_and_nothing_is_lost(tmp_path, django_user_model):
    user = django_user_model.objects.create_user("svc", password="svc-pass-123")
    token = Token.objects.create(user=user).key
    people = [ReachableRecipientFactory(external_id=f"fault-{i}").external_id for i in range(CLIENTS)]
    worker_env = server_env(
        DATABASE_URL=f"{test_database_url()}?application_name={WORKER}",
        CHANNEL_DELIVERY_LEASE_SECONDS="10",
        CHANNEL_REDRIVE_AFTER_SECONDS="10",
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=worker_env,
            stdout=open(tmp_path / f"{args[0]}.log", "a"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for args in (["qcluster"], ["orchestrate", "--interval", "2"])
    ]
    statuses: collections.Counter[int] = collections.Counter()
    created: dict[str, int] = {}
    problems: list[str] = []
    try:
        with gunicorn(
            tmp_path / "gunicorn.log",
            workers=2,
            threads=4,
            DATABASE_URL=f"{test_database_url()}?application_name={WEB}",
            CONN_MAX_AGE="60",
        ) as url:

            def client(who: str) -> None:
                for n in range(SENDS_PER_CLIENT):
                    key = f"{who}-{n}-{uuid.uuid4().hex[:6]}"
                    body = {
                        "recipient": who,
                        "channel": "sms",
                        "purpose": "transactional",
                        "content": {"body": f"Your code is {n:04d}."},
                    }
                    for _ in range(150):
                        status, answer, retry_after = _send(url, token, body, key)
                        statuses[status] += 1
                        if status == 201:
                            created[key] = answer["id"]
                            break
                        if status != 503:
                            problems.append(f"{status}: {answer}")
                            break
                        if not retry_after.isdigit():
                            problems.append(f"503 without Retry-After: {answer}")
                        time.sleep(0.2)  # a test's patience; a client would wait Retry-After seconds
                    else:
                        problems.append(f"{key}: still 503 after 150 tries")

            stop, killed = threading.Event(), []
            terminator = threading.Thread(target=_terminator, args=(stop, killed))
            terminator.start()
            threads = [threading.Thread(target=client, args=(who,)) for who in people]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=240)
            stop.set()
            terminator.join()
            load_done = time.monotonic()

            assert not problems, problems[:5]
            assert set(statuses) <= {201, 503}, statuses
            assert len(created) == CLIENTS * SENDS_PER_CLIENT
            assert sum(killed) > 0  # connections really were terminated
            # 0 lost, none doubled: one message per logical send, each the one its 201 named.
            ids = set(created.values())
            assert len(ids) == len(created)
            assert Message.objects.filter(recipient__external_id__in=people).count() == len(created)
            assert set(Message.objects.filter(pk__in=ids).values_list("pk", flat=True)) == ids
            # Delivered (handed to the provider) within a minute of the end of the load.
            while time.monotonic() - load_done < 60:
                if Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() == len(ids):
                    break
                time.sleep(0.5)
            left = dict(
                collections.Counter(
                    Message.objects.filter(pk__in=ids)
                    .exclude(status=MessageStatus.SENT)
                    .values_list("status", flat=True)
                )
            )
            assert not left, f"not sent within a minute: {left}"
            print(
                f"\nfault test: {len(ids)} sends, answers {dict(statuses)}, {sum(killed)} connections "
                f"terminated, all sent {time.monotonic() - load_done:.1f} s after the load"
            )
    finally:
        for proc in workers:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in workers:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
