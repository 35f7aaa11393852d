"""The backfill: `manage.py history_import` of 1M sends made elsewhere, from JSON Lines.

Goal (issue 16): at least 50,000 rows/s on this machine, memory flat (the file is streamed, one batch in
memory at a time). Builds a fresh bench database with 100k recipients, writes the JSON Lines file
(newsletters with shared content, pushes, SMS — a few percent break their channel's job), then runs the
real command in a subprocess and reports its rows/s and peak RSS; a first run at a tenth of the rows shows
the peak does not grow with the file. A re-run of the whole file (every row already recorded) follows.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch python bench/history_import.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import ROOT, bench_database_url

NAME = "history_import"
GOAL_ROWS_PER_S = 50_000
BENCH_SECRET = os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50)
CONTENTS = [
    (
        "email",
        "promotional",
        {"subject": "The spring newsletter", "body": "Ten things we loved this season."},
    ),
    ("email", "engagement", {"subject": "We saved your cart", "body": "Everything is where you left it."}),
    ("push", "engagement", {"title": "Come back!", "body": "We miss you.", "action_url": "app://home"}),
    ("sms", "transactional", {"body": "Your code is 271828."}),
    ("sms", "promotional", {"body": "SALE: 30% off everything this weekend, shop now!"}),  # breaks SMS's job
]
WEIGHTS = [50, 15, 20, 12, 3]


def setup(recipients: int) -> None:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO orchestrator_recipient (external_id, timezone, locale, attributes, created_at,"
            " updated_at) SELECT 'hist-' || g, 'UTC', 'en', '{}'::jsonb, now(), now()"
            " FROM generate_series(1, %s) g",
            [recipients],
        )
        conn.execute("ANALYZE orchestrator_recipient")


def write_file(path: Path, *, rows: int, recipients: int, start: int = 0) -> None:
    """`rows` JSON Lines, streamed to disk: sends over the last 90 days, ids unique per system."""
    rnd = random.Random(16 + start)
    now = datetime.now(UTC) - timedelta(minutes=5)
    picks = rnd.choices(range(len(CONTENTS)), weights=WEIGHTS, k=rows)
    systems = {"email": "mailchimp", "push": "braze", "sms": "legacy-twilio"}
    with open(path, "w") as f:
        for n, k in enumerate(picks, start):
            channel, purpose, content = CONTENTS[k]
            sent = now - timedelta(seconds=rnd.randrange(90 * 86400))
            row = {
                "recipient": f"hist-{rnd.randrange(1, recipients + 1)}",
                "channel": channel,
                "purpose": purpose,
                "sent_at": sent.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "source_system": systems[channel],
                "external_id": f"{systems[channel]}-{n}",
                "content": content,
            }
            f.write(json.dumps(row) + "\n")


def wal_position() -> str:
    """The server's WAL insert position (the import's cost on PostgreSQL is mostly WAL: six indexes take a
    random page each per row, and after every checkpoint a page's first change writes the whole page)."""
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def wal_since(start: str) -> float:
    """MiB of WAL the server wrote since `start` (the whole server's: other databases' writes count)."""
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", [start])
        return float(row.fetchone()[0]) / 2**20


def raw_reference(rows: int) -> float:
    """PostgreSQL alone: rows/s of one INSERT ... SELECT (and its commit, which runs the deferred foreign-key
    checks) of `rows` already-validated rows into the history table, copies of rows the import wrote with
    new external ids, in batches of 50k. No Python, no validation, no duplicate or recipient lookup: the
    database's ceiling for this table (its indexes and constraints) on this machine and server."""
    import psycopg

    from orchestrator.models import Message

    names = [f.column for f in Message._meta.concrete_fields if not f.primary_key]
    cols = ", ".join(f'"{c}"' for c in names)
    picked = ", ".join(
        "external_id || '-raw' AS external_id" if c == "external_id" else f'"{c}"' for c in names
    )
    seconds = 0.0
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        done = 0
        while done < rows:
            n = min(50_000, rows - done)
            conn.execute("DROP TABLE IF EXISTS raw_stage")
            conn.execute(
                f"CREATE TEMP TABLE raw_stage AS SELECT {picked} FROM orchestrator_message"
                " WHERE source = 'external' AND external_id NOT LIKE '%%-raw' ORDER BY id OFFSET %s LIMIT %s",
                [done, n],
            )
            conn.commit()
            conn.execute("CHECKPOINT")  # as during an import: the first change of a page writes all of it
            conn.commit()
            t0 = time.perf_counter()
            conn.execute(f"INSERT INTO orchestrator_message ({cols}) SELECT {cols} FROM raw_stage")
            conn.commit()
            seconds += time.perf_counter() - t0
            done += n
    return rows / seconds


def run_import(path: Path, batch: int | None) -> tuple[float, float, str]:
    """Run the command in a subprocess: (its own seconds — the wall time less Python and Django starting
    up — the peak RSS in MiB of that process, its summary line)."""
    cmd = [sys.executable, "manage.py", "history_import", str(path), "--no-progress"]
    if batch:
        cmd += ["--batch-size", str(batch)]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "orchestrator.settings", "DEBUG": "false"}
    env.setdefault("SECRET_KEY", BENCH_SECRET)  # DEBUG off refuses the development key
    # Peak RSS of a child as the kernel reports it (max over waited-for children: run one at a time and
    # read it through a wrapper so an earlier, larger child cannot mask a smaller one).
    wrapper = (
        "import resource, subprocess, sys;"
        "rc = subprocess.call(sys.argv[1:]);"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
        "sys.exit(rc)"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    peak_kb = int(next(line for line in done.stderr.splitlines() if line.startswith("PEAK_KB")).split()[1])
    summary = done.stdout.strip().splitlines()[-1]
    wall = time.perf_counter() - start
    own = re.search(r"\(([\d.]+) s,", summary)
    return (float(own.group(1)) if own else wall), peak_kb / 1024, summary


def django_setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    os.environ.setdefault("SECRET_KEY", BENCH_SECRET)
    django.setup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--raw-rows", type=int, default=200_000, help="rows for the PostgreSQL-alone reference (0: off)"
    )
    args = parser.parse_args()

    bench_database_url(NAME, fresh=True)
    sys.path.insert(0, str(ROOT))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "orchestrator.settings", "SECRET_KEY": BENCH_SECRET},
        check=True,
    )
    setup(args.recipients)
    small_rows = max(1, args.rows // 10)
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small.jsonl", Path(tmp) / "big.jsonl"
        t0 = time.perf_counter()
        write_file(small, rows=small_rows, recipients=args.recipients, start=10_000_000)
        write_file(big, rows=args.rows, recipients=args.recipients)
        size = big.stat().st_size / 2**20
        print(
            f"wrote {small_rows:,} + {args.rows:,} rows ({size:,.0f} MiB) in {time.perf_counter() - t0:.1f} s"
        )

        s_small, rss_small, _ = run_import(small, args.batch_size)
        small_rate = small_rows / s_small
        print(f"import {small_rows:>9,} rows: {small_rate:>9,.0f} rows/s, peak RSS {rss_small:6.0f} MiB")
        wal = wal_position()
        seconds, rss, summary = run_import(big, args.batch_size)
        rate = args.rows / seconds
        print(
            f"import {args.rows:>9,} rows: {rate:>9,.0f} rows/s, peak RSS {rss:6.0f} MiB  ({seconds:.1f} s,"
            f" {wal_since(wal) * 2**20 / args.rows / 1024:,.1f} KiB of WAL per row, whole server)"
        )
        print(f"  {summary}")
        s_again, rss_again, summary = run_import(big, args.batch_size)
        print(
            f"re-run {args.rows:>9,} rows: {args.rows / s_again:>9,.0f} rows/s, peak RSS {rss_again:6.0f} MiB"
            f"  (every row already recorded)"
        )
        print(f"  {summary}")
    if args.raw_rows:
        django_setup()
        raw = raw_reference(min(args.raw_rows, args.rows))
        print(
            f"PostgreSQL alone: {raw:,.0f} rows/s (INSERT ... SELECT of {min(args.raw_rows, args.rows):,}"
            f" validated rows, no Python); the import runs at {rate / raw:.0%} of it"
        )
    growth = rss - rss_small
    print(
        f"goal >= {GOAL_ROWS_PER_S:,} rows/s: {'met' if rate >= GOAL_ROWS_PER_S else 'NOT met'}"
        f" ({rate:,.0f});"
        f" memory {'flat' if growth < 64 else 'GROWS'}: peak {rss_small:.0f} MiB at {small_rows:,} rows,"
        f" {rss:.0f} MiB at {args.rows:,}"
    )


if __name__ == "__main__":
    main()
