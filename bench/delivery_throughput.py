"""Delivery throughput: accepted messages → in-memory providers through a real qcluster (messages/s).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch python bench/delivery_throughput.py \
        [--messages N] [--workers 2] [--before REF]

Uses its own database `<dbname>_bench_delivery` (dropped and re-created, then migrated), a qcluster
subprocess with --workers workers and the shipped delivery path: the bench writes N accepted messages over
4 channels (locmem email, SMS and push; the in-app inbox) and hands them over as a commit would — one
outbox wake-up (or, in code before the outbox, id tasks). Prints wall-clock and steady-state rates, the
wake-up tasks it took, the biggest worker's resident memory, and checks that every message was handed
over exactly once. `--before REF` first runs this same script against REF (a detached worktree in
/tmp/bench-REF) so both figures come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_database_url  # noqa: E402
from _delivery import (  # noqa: E402
    accepted_messages,
    cluster_start,
    cluster_stop,
    compare,
    django_setup_in_memory,
    exactly_once,
    hand_off,
    run_before,
    strip_before,
    wait_delivered,
)


def main() -> int:
    ref, before_argv, argv = strip_before(sys.argv[1:])
    before = run_before(ref, Path(__file__).name, before_argv) if ref else None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("Q_WORKERS", "2")))
    parser.add_argument("--batch", type=int, default=50, help="message ids per task (code before the outbox)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)

    url = bench_database_url("delivery", fresh=True)
    django_setup_in_memory(
        DATABASE_URL=url, CHANNEL_TASK_BATCH_SIZE=str(args.batch), Q_WORKERS=str(args.workers)
    )
    from django.core.management import call_command
    from django_q.models import OrmQ, Success

    print(f"database: {url.rsplit('/', 1)[-1]}; migrating…", flush=True)
    call_command("migrate", verbosity=0)
    ids = accepted_messages(
        count=args.messages, recipients=args.recipients, channels=["email", "sms", "push", "in_app"]
    )
    print(f"{len(ids)} accepted messages over {args.recipients} recipients (4 channels)", flush=True)

    cluster, log = cluster_start("bench_delivery_qcluster.log")
    try:
        t0 = time.monotonic()
        how = hand_off(ids)
        enqueued = time.monotonic() - t0
        polled = wait_delivered(total=len(ids), timeout=args.timeout, cluster_pid=cluster.pid)
    finally:
        cluster_stop(cluster, log)

    tasks = Success.objects.exclude(name="warm-up").count() + OrmQ.objects.count()
    record = exactly_once(len(ids))
    wall = polled["wall"] + enqueued
    print()
    print(f"workers: {args.workers}   hand-off: {how}   tasks run or queued: {tasks}")
    print(f"hand-off:          {enqueued * 1000:.0f} ms")
    print(f"delivered (sent):  {record['sent']} / {len(ids)}   not sent: {record['other']}")
    print(
        f"attempts:          {record['attempts']} ({record['ok']} success);"
        f" messages with two successes: {record['doubled']}"
    )
    rate = record["sent"] / wall
    print(f"wall clock:        {wall:.2f} s  →  {rate:.0f} messages/s (hand-off to all recorded)")
    steady = record["sent"] / record["steady"]
    print(
        f"steady state:      {record['steady']:.2f} s  →  {steady:.0f} messages/s"
        " (first claim to last record)"
    )
    print(
        f"worker RSS (MB):   {polled['rss_first_mb'] or 0:.0f} after ~1%"
        f" → {polled['rss_last_mb']:.0f} at the end"
        f" (peak {polled['rss_peak_mb']:.0f})"
    )
    ok = (
        record["sent"] == len(ids)
        and record["ok"] == len(ids) == record["attempts"]
        and not record["doubled"]
    )
    print("exactly once:      " + ("yes — one successful attempt per message" if ok else "NO"))
    after = {
        "messages": len(ids),
        "wall_rate": round(rate),
        "steady_rate": round(steady),
        "tasks": tasks,
        "exactly_once": ok,
        "rss_first_mb": round(polled["rss_first_mb"] or 0),
        "rss_last_mb": round(polled["rss_last_mb"]),
    }
    print("RESULT " + json.dumps(after), flush=True)
    compare(
        before,
        after,
        [
            ("messages", "messages"),
            ("wall_rate", "messages/s (wall clock)"),
            ("steady_rate", "messages/s (steady state)"),
            ("tasks", "django-q2 tasks"),
            ("exactly_once", "exactly once"),
            ("rss_last_mb", "worker RSS at the end (MB)"),
        ],
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
