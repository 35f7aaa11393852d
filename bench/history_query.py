"""What did this person get in the last 24 h? The history query on 1M+ messages (p50/p99).

Builds (once) 50k recipients with ~1.2M messages spread over 30 days, then times
orchestrator.selectors.recipient_messages_recent for random recipients, plus the same query as raw SQL.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta

from _common import django_setup, percentiles

RECIPIENTS = 50_000
MESSAGES = 1_200_000
QUERIES = 3_000


def populate(connection) -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM orchestrator_message")
        if cur.fetchone()[0] >= MESSAGES:
            return
        print(f"building {RECIPIENTS:,} recipients and {MESSAGES:,} messages (once)...", flush=True)
        cur.execute("TRUNCATE orchestrator_message, orchestrator_recipient RESTART IDENTITY CASCADE")
        cur.execute(
            """
            INSERT INTO orchestrator_recipient
              (external_id, timezone, locale, attributes, created_at, updated_at)
            SELECT 'bench-' || g, 'UTC', 'en', '{}'::jsonb, %s, %s FROM generate_series(1, %s) g
            """,
            [time_now(), time_now(), RECIPIENTS],
        )
        cur.execute(
            """
            INSERT INTO orchestrator_message
              (recipient_id, channel, requested_channel, channel_reason, purpose, priority, content,
               status, rule, reason, warnings, source, source_ref, to_address, provider,
               provider_message_id, attempts, last_error, created_at, decided_at, accepted_at, updated_at,
               source_system, external_id)
            SELECT 1 + (g %% %(r)s),
                   (ARRAY['email','push','sms','in_app'])[1 + g %% 4], '', '', 'engagement', 50,
                   '{"subject": "Hello", "body": "A message."}'::jsonb, 'delivered', '', '', '[]'::jsonb,
                   'api', '', '', 'locmem', '', 1, '',
                   t, t, t, t, '', ''
            FROM (SELECT g, %(now)s::timestamptz - (random() * interval '30 days') AS t
                  FROM generate_series(1, %(n)s) g) s
            """,
            {"r": RECIPIENTS, "n": MESSAGES, "now": time_now()},
        )
        cur.execute("ANALYZE orchestrator_message")
        cur.execute("ANALYZE orchestrator_recipient")


def time_now():
    from django.utils import timezone

    return timezone.now()


def main() -> None:
    django_setup("history")
    from django.db import connection

    from orchestrator.models import Message
    from orchestrator.selectors import recipient_messages_recent

    populate(connection)
    total = Message.objects.count()
    rng = random.Random(1)
    ids = [rng.randint(1, RECIPIENTS) for _ in range(QUERIES)]

    orm, rows = [], 0
    for rid in ids:
        t0 = time.perf_counter()
        rows += len(recipient_messages_recent(recipient_id=rid, hours=24))
        orm.append(time.perf_counter() - t0)

    raw = []
    with connection.cursor() as cur:
        for rid in ids:
            t0 = time.perf_counter()
            cur.execute(
                "SELECT * FROM orchestrator_message WHERE recipient_id = %s AND created_at >= %s "
                "ORDER BY created_at DESC, id DESC",
                [rid, time_now() - timedelta(hours=24)],
            )
            cur.fetchall()
            raw.append(time.perf_counter() - t0)
        cur.execute(
            "EXPLAIN SELECT * FROM orchestrator_message WHERE recipient_id = 42 AND created_at >= now() - "
            "interval '24 hours' ORDER BY created_at DESC, id DESC"
        )
        plan = " / ".join(r[0].strip().split("  (cost")[0] for r in cur.fetchall() if "Cond" not in r[0])

    o, r = percentiles(orm), percentiles(raw)
    print(
        f"history_query: {total:,} messages, {RECIPIENTS:,} recipients, {QUERIES:,} queries, "
        f"{rows / QUERIES:.2f} rows/query"
    )
    print(f"  selector (ORM): p50 {o['p50_ms']:.3f} ms  p99 {o['p99_ms']:.3f} ms  mean {o['mean_ms']:.3f} ms")
    print(f"  raw SQL       : p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  mean {r['mean_ms']:.3f} ms")
    print(f"  plan: {plan}")


if __name__ == "__main__":
    main()
