"""Governed decisions per second (governor.services.message_decide) against the raw-SQL reference.

Both do the same work per message: lock the recipient row, count the recipient's window, insert the
message and its decision row (the MessageDecision that keeps every decision), commit. The governed path
also checks preferences, pauses, quiet hours, every enabled rule and the queue ahead, and builds the
reason. 1 and 4 processes, p50/p99 latency, ratios. The hand-off to delivery that follows a decision (the
channels app's on-commit hook) is switched off here: delivery has benchmarks of its own.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch python bench/governor_decisions.py [--n 3000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
# DEBUG off (the production configuration) refuses the development key: a throwaway one per run.
os.environ.setdefault("SECRET_KEY", "bench-" + os.urandom(24).hex())
os.environ.setdefault("DEBUG", "false")  # measure the production configuration
NAME = "governor_decisions"

from _common import bench_database_url  # noqa: E402


def setup_population(recipients: int, pools: int) -> list[list[int]]:
    """`pools` disjoint groups of recipients, each with 2 cleared messages in the last 24 h."""
    from django.db import connection

    from orchestrator.models import Recipient

    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO orchestrator_recipient"
            " (external_id, timezone, locale, attributes, created_at, updated_at) SELECT 'bench-' || g,"
            " (ARRAY['UTC','Europe/Paris','America/New_York','Asia/Tokyo'])[g %% 4 + 1],"
            " 'en-US', '{}'::jsonb, now(), now() FROM generate_series(1, %s) g",
            [recipients * pools],
        )
        cur.execute(
            f"INSERT INTO orchestrator_message ({COLUMNS})"
            " SELECT r.id, 'email', 'email', '', 'engagement', 50,"
            " '{\"subject\": \"Earlier\", \"body\": \"...\"}'::jsonb, 'delivered', '', 'Within every cap.',"
            " NULL, NULL, '[]'::jsonb, 'api', '', '', '', 0, '', now() - k * interval '5 hours',"
            " now() - k * interval '5 hours', now() - k * interval '5 hours', now(), '', '', '' "
            " FROM orchestrator_recipient r CROSS JOIN generate_series(1, 2) k"
        )
        cur.execute("ANALYZE")
    ids = list(Recipient.objects.order_by("pk").values_list("pk", flat=True))
    return [ids[i * recipients : (i + 1) * recipients] for i in range(pools)]


COLUMNS = (
    "recipient_id, channel, requested_channel, channel_reason, purpose, priority, content, status, rule,"
    " reason, deliver_after, expires_at, warnings, source, source_ref, provider, provider_message_id,"
    " attempts, last_error, created_at, decided_at, accepted_at, updated_at, to_address,"
    " source_system, external_id"
)


def governed_worker(ids: list[int], n: int, offset: int, out) -> None:
    import django

    django.setup()
    from django.db import connections
    from django.utils import timezone

    from governor.services import MessageDraft, message_decide
    from orchestrator.models import Message, Recipient
    from orchestrator.signals import message_status_changed

    message_status_changed.disconnect(sender=Message, dispatch_uid="channels_deliver_newly_accepted")
    connections.close_all()
    recipients = list(Recipient.objects.filter(pk__in=ids).order_by("pk"))
    content = {"subject": "A nudge", "body": "Something you may like."}
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        r = recipients[(i + offset) % len(recipients)]
        t0 = time.perf_counter()
        draft = MessageDraft(
            recipient_id=r.pk,
            channel="email",
            purpose="engagement",
            content=content,
            source="api",
            source_ref="bench",
            requested_channel="email",
        )
        message_decide(draft=draft, at=timezone.now())
        latencies.append(time.perf_counter() - t0)
    out.put((time.perf_counter() - start, latencies))
    connections.close_all()


def raw_worker(ids: list[int], n: int, offset: int, out) -> None:
    import psycopg
    from django.utils import timezone
    from psycopg.types.json import Jsonb

    conn = psycopg.connect(os.environ["DATABASE_URL"])
    content = Jsonb({"subject": "A nudge", "body": "Something you may like."})
    # The message and its decision row in one statement, as the governed path writes them.
    insert = (
        f"WITH m AS (INSERT INTO orchestrator_message ({COLUMNS})"
        " VALUES (%s, 'email', 'email', '', 'engagement', 50, %s,"
        " %s, %s, %s, %s, NULL, '[]'::jsonb, 'api', 'bench', '', '', 0, '', %s, %s, %s, %s, '', '', '')"
        " RETURNING id)"
        ' INSERT INTO orchestrator_messagedecision (message_id, at, outcome, rule, reason, used, "limit",'
        " \"window\", next_slot) SELECT m.id, %s, %s, %s, %s, %s, 3, '24 hours', %s FROM m"
    )
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        rid = ids[(i + offset) % len(ids)]
        t0 = time.perf_counter()
        at = timezone.now()
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM orchestrator_recipient WHERE id = %s FOR UPDATE", [rid])
            cur.execute(
                "SELECT count(*), min(accepted_at) FROM orchestrator_message WHERE recipient_id = %s"
                " AND accepted_at > %s AND purpose IN ('engagement', 'promotional')",
                [rid, at - timedelta(hours=24)],
            )
            count, oldest = cur.fetchone()
            ok = count < 3
            cur.execute(
                insert,
                [
                    rid,
                    content,
                    "accepted" if ok else "deferred",
                    "" if ok else "Engagement + promotional, 24 h",
                    "ok" if ok else "capped",
                    None if ok else oldest + timedelta(hours=24),
                    at,
                    at,
                    at if ok else None,
                    at,
                    at,
                    "accepted" if ok else "deferred",
                    "" if ok else "Engagement + promotional, 24 h",
                    "ok" if ok else "capped",
                    count + 1 if ok else count,
                    None if ok else oldest + timedelta(hours=24),
                ],
            )
        conn.commit()
        latencies.append(time.perf_counter() - t0)
    out.put((time.perf_counter() - start, latencies))
    conn.close()


def run(worker, pools: list[list[int]], procs: int, n: int, offset: int = 0) -> tuple[float, list[float]]:
    """Run `n` decisions split over `procs` processes; returns (decisions/s, latencies)."""
    from django.db import connections

    connections.close_all()
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    each = n // procs
    workers = [ctx.Process(target=worker, args=(pools[i], each, offset + i * 7, out)) for i in range(procs)]
    for w in workers:
        w.start()
    results = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    latencies = [lat for _, lats in results for lat in lats]
    # Rate over the workers' own loop time (process start-up excluded), summed over processes.
    rate = sum(len(lats) / elapsed for elapsed, lats in results)
    return rate, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000, help="decisions per measurement")
    parser.add_argument("--recipients", type=int, default=500, help="recipients per process pool")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of raw and governed")
    args = parser.parse_args()

    url = bench_database_url(NAME, fresh=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # 4 disjoint pools per measurement so every measurement starts from the same state.
    pools = setup_population(args.recipients, 16)
    print(f"governor_decisions on {urlparse(url).path.lstrip('/')}: {args.n} decisions per measurement")
    print("  recipients at 2 of 3 engagement messages in 24 h; default governor (2 rules, quiet hours)")
    print(f"  {'procs':>5} {'path':<9} {'dec/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    # Raw and governed alternate in short rounds so that load from elsewhere hits both alike; each path
    # keeps its own recipients (their histories grow the same way).
    next_pool = 0
    ratios = {}
    for procs in (1, 4):
        pools_for = {}
        for label in ("raw SQL", "governed"):
            pools_for[label] = pools[next_pool : next_pool + procs]
            next_pool += procs
        totals = {label: [0.0, []] for label in pools_for}
        for rep in range(args.rounds):
            for label, worker in (("raw SQL", raw_worker), ("governed", governed_worker)):
                rate, lats = run(worker, pools_for[label], procs, args.n // args.rounds, offset=rep * 13)
                totals[label][0] += len(lats) / rate
                totals[label][1] += lats
        figures = {}
        for label, (busy, lats) in totals.items():
            lats.sort()
            rate = len(lats) / busy
            figures[label] = rate
            p50 = statistics.median(lats) * 1000
            p99 = lats[int(len(lats) * 0.99) - 1] * 1000
            print(f"  {procs:>5} {label:<9} {rate:>9.0f} {p50:>8.2f} {p99:>8.2f}")
        ratios[procs] = figures["governed"] / figures["raw SQL"]
    for procs, ratio in ratios.items():
        verdict = "goal met" if ratio >= 0.5 else "below goal"
        print(f"  ratio governed/raw with {procs} process(es): {ratio:.0%} (goal >= 50%: {verdict})")


if __name__ == "__main__":
    main()
