"""Where a delivery worker's time goes: one in-process drain of N accepted messages under cProfile.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch python bench/delivery_profile.py \
        [--messages N] [--sort tottime] [--limit 40] [--threads]

Its own database `<dbname>_bench_delivery_profile` (re-created), the world of delivery_throughput.py
(4 channels, in-memory providers), then `deliveries_drain()` in this process: the claim and record run in
the profiled main thread, the provider calls in the send pool (profiled too with --threads, merged).
Prints the rate, the statements the main thread ran per message, and the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_database_url  # noqa: E402
from _delivery import accepted_messages, django_setup_in_memory, exactly_once  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process on this machine (the worker's PostgreSQL backend)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--threads", action="store_true", help="profile the send pool's threads too")
    parser.add_argument("--no-profile", action="store_true", help="time it only: wall and CPU per message")
    args = parser.parse_args()

    bench_database_url("delivery_profile", fresh=True)
    django_setup_in_memory()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from channels_app import delivery

    call_command("migrate", verbosity=0)
    ids = accepted_messages(
        count=args.messages, recipients=args.recipients, channels=["email", "sms", "push", "in_app"]
    )
    delivery._wake_robust = lambda: None  # no second worker: this process drains alone

    if args.no_profile:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        t0, c0, m0, p0 = time.monotonic(), time.process_time(), time.thread_time(), cpu_seconds(backend)
        done = delivery.deliveries_drain()
        wall, cpu, pg = time.monotonic() - t0, time.process_time() - c0, cpu_seconds(backend) - p0
        main = time.thread_time() - m0
        record = exactly_once(len(ids))
        print(
            f"{done} recorded in {wall:.2f} s → {done / wall:.0f} messages/s; this process's CPU"
            f" {cpu:.2f} s → {cpu / done * 1e6:.0f} µs per message ({main / done * 1e6:.0f} in the main"
            f" thread: claim and record); its PostgreSQL backend's"
            f" {pg:.2f} s → {pg / done * 1e6:.0f} µs per message"
        )
        ok = record["sent"] == record["ok"] == record["attempts"] == len(ids) and not record["doubled"]
        print(f"exactly once: {'yes' if ok else 'NO'}")
        print(f'RESULT {{"rate": {done / wall:.0f}, "cpu_us_per_message": {cpu / done * 1e6:.0f}}}')
        return 0 if ok else 1

    profiles: list[cProfile.Profile] = []
    if args.threads:
        local = threading.local()

        def start_thread_profile(*_):
            if threading.current_thread() is threading.main_thread() or getattr(local, "p", None):
                return
            local.p = cProfile.Profile()
            profiles.append(local.p)
            local.p.enable()

        threading.setprofile(start_thread_profile)
    profile = cProfile.Profile()
    with CaptureQueriesContext(connection) as queries:
        t0 = time.monotonic()
        profile.enable()
        done = delivery.deliveries_drain()
        profile.disable()
        wall = time.monotonic() - t0
    threading.setprofile(None)
    record = exactly_once(len(ids))
    print(f"{done} recorded in {wall:.2f} s → {done / wall:.0f} messages/s (profiled: slower)")
    print(f"main-thread statements: {len(queries)} ({len(queries) / max(1, done):.3f} per message)")
    print(f"sent {record['sent']}, attempts {record['attempts']}, success {record['ok']}")
    print(f"messages with two successes: {record['doubled']}")
    by_shape: dict[str, list[float]] = {}
    for q in queries.captured_queries:
        by_shape.setdefault(q["sql"][:90], []).append(float(q["time"]))
    print("main-thread statements by total time (s, count):")
    for shape, times in sorted(by_shape.items(), key=lambda kv: -sum(kv[1]))[:12]:
        print(f"  {sum(times):7.3f} {len(times):5d}  {shape}")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    for p in profiles:
        stats.add(p)
    stats.sort_stats(args.sort).print_stats(args.limit)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
