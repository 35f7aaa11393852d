"""The review's forecast over 14 days of 1M messages (goal: at most 5 s).

Builds (once) 100k recipients with ~1M cleared messages over the last 15 days (mixed channels and
purposes), and 10k `cart_abandoned` events with contact points, on the default governor; then replays
the cart-recovery journey with journeys.forecast.journey_forecast a few times and reports the times.

Smaller runs while the machine is shared: BENCH_FORECAST_MESSAGES=200000 python bench/journey_forecast.py
(the database is rebuilt when the size changes).
"""

from __future__ import annotations

import os
import statistics
import time

from _common import django_setup

MESSAGES = int(os.environ.get("BENCH_FORECAST_MESSAGES", "1000000"))
RECIPIENTS = max(1000, MESSAGES // 10)
TRIGGERS = max(100, RECIPIENTS // 10)
RUNS = 3
GOAL_S = 5.0


def populate(connection, now) -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM orchestrator_message")
        have = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM orchestrator_recipient")
        if have == MESSAGES and cur.fetchone()[0] == RECIPIENTS:
            return
        print(
            f"building {RECIPIENTS:,} recipients, {MESSAGES:,} messages, {TRIGGERS:,} triggers...", flush=True
        )
        cur.execute(
            "TRUNCATE orchestrator_message, orchestrator_recipient, orchestrator_event,"
            " orchestrator_contactpoint RESTART IDENTITY CASCADE"
        )
        cur.execute(
            """
            INSERT INTO orchestrator_recipient
              (external_id, timezone, locale, attributes, created_at, updated_at)
            SELECT 'bench-' || g, (ARRAY['UTC','Europe/Paris','America/New_York','Asia/Tokyo'])[1 + g %% 4],
                   'en', '{}'::jsonb, %(now)s, %(now)s
            FROM generate_series(1, %(r)s) g
            """,
            {"now": now, "r": RECIPIENTS},
        )
        cur.execute(
            """
            INSERT INTO orchestrator_message
              (recipient_id, channel, requested_channel, channel_reason, purpose, priority, content,
               status, rule, reason, warnings, source, source_ref, to_address, provider,
               provider_message_id, attempts, last_error, created_at, decided_at, accepted_at, updated_at,
               source_system, external_id)
            SELECT 1 + (g %% %(r)s), (ARRAY['email','push','in_app','email'])[1 + (g / 7) %% 4], '', '',
                   (ARRAY['engagement','promotional','transactional','engagement','alert'])[1 + (g / 3) %% 5],
                   50, '{"body": "A message."}'::jsonb, 'delivered', '', '', '[]'::jsonb, 'api', '', '',
                   'locmem', '', 1, '', t, t, t, t, '', ''
            FROM (SELECT g, %(now)s::timestamptz - (random() * interval '15 days') AS t
                  FROM generate_series(1, %(n)s) g) s
            """,
            {"r": RECIPIENTS, "n": MESSAGES, "now": now},
        )
        cur.execute(
            """
            INSERT INTO orchestrator_contactpoint
              (recipient_id, channel, address, opted_in, soft_bounces, undeliverable_reason, created_at,
               updated_at)
            SELECT r.id, c.channel, CASE WHEN c.channel = 'in_app' THEN '' ELSE c.channel || '-' || r.id END,
                   true, 0, '', %(now)s, %(now)s
            FROM orchestrator_recipient r CROSS JOIN (VALUES ('email'), ('push'), ('in_app')) AS c(channel)
            WHERE r.id <= %(t)s
            """,
            {"now": now, "t": TRIGGERS},
        )
        cur.execute(
            """
            INSERT INTO orchestrator_event (recipient_id, name, properties, occurred_at, received_at)
            SELECT 1 + (g %% %(t)s), CASE WHEN g %% 5 = 0 THEN 'purchase' ELSE 'cart_abandoned' END,
                   '{}'::jsonb,
                   %(now)s::timestamptz - (random() * interval '14 days'), %(now)s
            FROM generate_series(1, %(n)s) g
            """,
            {"t": TRIGGERS, "n": TRIGGERS * 2, "now": now},
        )
        for table in ("orchestrator_message", "orchestrator_recipient", "orchestrator_event"):
            cur.execute(f"ANALYZE {table}")


def main() -> None:
    django_setup("forecast")
    from django.db import connection
    from django.utils import timezone

    from governor.defaults import defaults_install
    from governor.models import CapRule, QuietHours
    from journeys.demo import cart_recovery_definition
    from journeys.forecast import journey_forecast

    if not CapRule.objects.exists():
        defaults_install(CapRule, QuietHours)
    now = timezone.now()
    populate(connection, now)
    times, f = [], None
    for _ in range(RUNS):
        t0 = time.perf_counter()
        f = journey_forecast(definition=cart_recovery_definition(), now=now)
        times.append(time.perf_counter() - t0)
    print(
        f"forecast over the history of {f.recipients_read:,} recipients ({MESSAGES:,} messages),"
        f" {f.entered:,} enrollments"
        f" of {f.recipients_entered:,} recipients, {f.sends_total:,} sends: "
        f"best {min(times):.2f} s, median {statistics.median(times):.2f} s (goal <= {GOAL_S:.0f} s)"
    )
    print(
        f"  deferred by rule {dict(f.deferred)};"
        f" at cap {f.at_cap_before:,} -> {f.at_cap_after:,} of {f.recipients_total:,}"
    )


if __name__ == "__main__":
    main()
