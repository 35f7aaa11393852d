"""Journeys drain benchmark: 100k enrollments due at the same moment, advanced by 1 and by 2 worker
processes (the scheduler's batches, FOR UPDATE SKIP LOCKED), on its own PostgreSQL database.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch_jour python bench/journeys_drain.py [--n 100000]

Uses `<dbname>_bench_journeys` (created and migrated here). Providers are the locmem ones (nothing leaves
the machine); accepted messages are handed to the delivery transport on commit (queued as django-q2
tasks, which this benchmark does not run: it measures the journey scheduler and the governor). Prints
steps advanced per second and time to drain for each worker count, and checks that every enrollment
sent exactly once.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
# DEBUG off (the production configuration) refuses the development key: a throwaway one per run.
os.environ.setdefault("SECRET_KEY", "bench-" + os.urandom(24).hex())
os.environ.setdefault("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
os.environ.setdefault("CHANNEL_PUSH_BACKEND", "channels_app.backends.push.LocmemPushBackend")
os.environ.setdefault("CHANNEL_SMS_BACKEND", "channels_app.backends.sms.LocmemSmsBackend")
os.environ.setdefault("LOG_LEVEL", "WARNING")

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _bench_database_url() -> str:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orchestrator")
    parts = urlsplit(base)
    name = parts.path.lstrip("/") or "orchestrator"
    bench_name = name if name.endswith("_bench_journeys") else f"{name}_bench_journeys"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [bench_name]).fetchone():
            conn.execute(f'CREATE DATABASE "{bench_name}"')
    return urlunsplit(parts._replace(path=f"/{bench_name}"))


def _setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    import django

    django.setup()


def _prepare(n: int) -> None:
    """Fresh world: n recipients reachable on push/email/in-app, cart recovery active, n due enrollments."""
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cur:
        cur.execute(
            "TRUNCATE journeys_steprun, journeys_enrollment, journeys_journeyversion, journeys_journey, "
            "orchestrator_message, orchestrator_contactpoint, orchestrator_event, orchestrator_recipient, "
            "django_q_ormq "
            "RESTART IDENTITY CASCADE"
        )
        cur.execute(
            "INSERT INTO orchestrator_recipient "
            "(external_id, timezone, locale, attributes, created_at, updated_at) "
            "SELECT 'bench-' || g, 'UTC', 'en-US', '{}'::jsonb, %s, %s FROM generate_series(1, %s) g",
            [NOW, NOW, n],
        )
        for channel, address in (
            ("push", "'token-' || id"),
            ("email", "'r' || id || '@example.com'"),
            ("in_app", "''"),
        ):
            cur.execute(
                "INSERT INTO orchestrator_contactpoint "
                "(recipient_id, channel, address, opted_in, created_at, updated_at, soft_bounces,"
                " undeliverable_reason) "
                f"SELECT id, %s, {address}, true, %s, %s, 0, '' FROM orchestrator_recipient",
                [channel, NOW, NOW],
            )
    from journeys.demo import cart_recovery_install

    journey = cart_recovery_install(now=NOW)
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO journeys_enrollment "
            "(journey_id, version_id, recipient_id, status, trigger, step_id, seq, "
            "waiting, wait_event, channels_used, next_run_at, entered_at, goal_deadline, exit_reason, "
            "held_out, holdout_share, error) "
            "SELECT %s, %s, id, 'active', 'api', 'nudge', 0, '', '', '[]'::jsonb, %s, %s, %s, '', "
            "false, 0, '' "
            "FROM orchestrator_recipient",
            [journey.pk, journey.live_version_id, NOW, NOW, NOW.replace(day=5)],
        )
        cur.execute("ANALYZE")


def _reset() -> None:
    """Put every enrollment back at its first step, due now (between runs)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("TRUNCATE journeys_steprun, orchestrator_message, django_q_ormq RESTART IDENTITY CASCADE")
        cur.execute(
            "UPDATE journeys_enrollment SET status='active', step_id='nudge', seq=0, "
            "waiting='', wait_event='', "
            "waiting_run_id=NULL, wait_message_id=NULL, last_message_id=NULL, channels_used='[]'::jsonb, "
            "step_started_at=NULL, next_run_at=%s, ended_at=NULL, exit_reason=''",
            [NOW],
        )
        cur.execute("VACUUM ANALYZE journeys_enrollment")


def _worker(url: str, now: datetime, queue) -> None:
    _setup_django(url)
    from journeys.scheduler import enrollments_advance

    result = enrollments_advance(now=now, limit=10**9)
    queue.put((result.enrollments, result.steps, result.messages, result.batches))


def _drain(url: str, workers: int, now: datetime) -> dict:
    from django.db import connections

    connections.close_all()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    started = time.perf_counter()
    procs = [ctx.Process(target=_worker, args=(url, now, queue)) for _ in range(workers)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    elapsed = time.perf_counter() - started
    enrollments, steps, messages, batches = (sum(r[i] for r in results) for i in range(4))
    return {
        "workers": workers,
        "enrollments": enrollments,
        "steps": steps,
        "messages": messages,
        "batches": batches,
        "seconds": elapsed,
        "steps_per_s": steps / elapsed if elapsed else 0.0,
        "per_worker": [r[0] for r in results],
    }


def _check(n: int) -> str:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT recipient_id), "
            "(SELECT count(*) FROM journeys_steprun), "
            "(SELECT count(*) FROM journeys_enrollment WHERE next_run_at <= %s AND status = 'active') "
            "FROM orchestrator_message",
            [NOW],
        )
        messages, recipients, runs, still_due = cur.fetchone()
    ok = messages == n and recipients == n and still_due == 0
    return (
        f"{'OK' if ok else 'MISMATCH'}: {messages} messages to {recipients} recipients, {runs} step runs, "
        f"{still_due} still due"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="enrollments due at once")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--skip-second-step", action="store_true", help="skip the +2 h email round")
    args = parser.parse_args()

    url = _bench_database_url()
    _setup_django(url)
    from django.conf import settings

    batch = settings.ORCHESTRATOR.get("JOURNEY_BATCH_SIZE", 500)
    print(f"database: {url.rsplit('/', 1)[-1]}   enrollments due at once: {args.n:,}   batch size: {batch}")
    t = time.perf_counter()
    _prepare(args.n)
    print(f"setup: {time.perf_counter() - t:.1f} s (recipients, contact points, cart-recovery, enrollments)")
    print(
        "each enrollment runs `nudge` (push send through the governor) and starts `pause` (wait 2 h): 2 steps"
    )
    print()
    print(
        f"{'workers':>7} {'enrollments':>12} {'steps':>9} {'messages':>9} "
        f"{'time to drain':>14} {'steps/s':>9}"
    )
    for i, workers in enumerate(args.workers):
        if i:
            _reset()
        r = _drain(url, workers, NOW)
        print(
            f"{r['workers']:>7} {r['enrollments']:>12,} {r['steps']:>9,} {r['messages']:>9,} "
            f"{r['seconds']:>12.2f} s {r['steps_per_s']:>9,.0f}   per worker: {r['per_worker']}"
        )
        print(f"        check: {_check(args.n)}")
    if not args.skip_second_step:
        later = NOW + timedelta(hours=2)
        print()
        print(
            "two hours later (same enrollments, 2 workers): `pause` ends, `detail` sends the email, "
            "`visit` starts waiting for app_open: 3 steps"
        )
        r = _drain(url, 2, later)
        print(
            f"{r['workers']:>7} {r['enrollments']:>12,} {r['steps']:>9,} {r['messages']:>9,} "
            f"{r['seconds']:>12.2f} s {r['steps_per_s']:>9,.0f}   per worker: {r['per_worker']}"
        )
    print()
    print("goal: >= 3,000 steps/s on 2 cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
