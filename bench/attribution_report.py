"""The attribution report over 1M messages and 100k conversions (goal: at most 5 s).

Builds (once, or again with --fresh or another size) N recipients, 1M messages over 60 days on four
channels (a third of them sends of a journey, linked by StepRuns to 100k enrollments), and 100k
`purchase` events with an amount over the last 30 days; one conversion definition (lookback 7 days,
value `amount`). Then times, with DEBUG off:

  - reports.attribution_report: GET reports/attribution/ for the 30 days (the five models, per channel,
    journey and step) — the goal;
  - the same for the journey's goal conversions (GET reports/attribution/?journey=...);
  - reports.overall_report: everything the admin's overall page shows (sequences, holdout, trends...).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch python bench/attribution_report.py [--scale 0.1]

`--scale 0.1` builds a tenth of the world (100k messages, 10k conversions) for a quick check on a busy
machine. Uses `<dbname>_bench_attribution`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

from _common import bench_database_url, django_setup

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
MESSAGES = 1_000_000
CONVERSIONS = 100_000
RECIPIENTS = 100_000
RUNS = 3


def populate(connection, *, scale: float) -> None:
    from journeys.demo import cart_recovery_definition
    from journeys.models import ConversionDefinition, Journey
    from journeys.services import journey_create, journey_transition

    messages, conversions, recipients = (
        int(MESSAGES * scale),
        int(CONVERSIONS * scale),
        int(RECIPIENTS * scale),
    )
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM orchestrator_message")
        have_messages = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM orchestrator_event WHERE name = 'purchase'")
        if have_messages == messages and cur.fetchone()[0] == conversions:
            return
        print(f"building {recipients:,} recipients, {messages:,} messages, {conversions:,} conversions...")
        cur.execute(
            "TRUNCATE orchestrator_message, orchestrator_event, orchestrator_recipient, journeys_steprun,"
            " journeys_enrollment, journeys_journeyversion, journeys_journey,"
            " journeys_conversiondefinition RESTART IDENTITY CASCADE"
        )
    definition = cart_recovery_definition()
    definition["goal"]["value_property"] = "amount"
    definition["holdout"] = {"share": 0.1}
    journey = journey_create(definition=definition, now=NOW - timedelta(days=90))
    for action in ("propose", "approve", "activate"):
        journey = journey_transition(journey=journey, action=action, now=NOW - timedelta(days=90))
    ConversionDefinition.objects.create(
        name="Purchase", event="purchase", lookback=timedelta(days=7), value_property="amount"
    )
    version = Journey.objects.get(pk=journey.pk).live_version_id
    enrollments = conversions  # one journey entry per conversion's recipient, about
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO orchestrator_recipient
              (external_id, timezone, locale, attributes, created_at, updated_at)
            SELECT 'bench-' || g, 'UTC', 'en', '{}'::jsonb, %(t0)s, %(t0)s FROM generate_series(1, %(n)s) g
            """,
            {"n": recipients, "t0": NOW - timedelta(days=120)},
        )
        # Messages: created over 60 days; 70 % reached the recipient (delivered, opened or clicked).
        cur.execute(
            """
            INSERT INTO orchestrator_message
              (recipient_id, channel, requested_channel, channel_reason, purpose, priority, content, status,
               rule, reason, warnings, source, source_ref, to_address, provider, provider_message_id,
               attempts, last_error, created_at, decided_at, accepted_at, sent_at, delivered_at, opened_at,
               updated_at, source_system, external_id)
            SELECT 1 + (g %% %(r)s), (ARRAY['email','push','sms','in_app'])[1 + (g / 7) %% 4], '', '',
                   'engagement', 50, '{"body": "x"}'::jsonb, s.status, '', '', '[]'::jsonb,
                   CASE WHEN g %% 3 = 0 THEN 'journey' ELSE 'api' END, '', '', 'locmem', '', 1, '',
                   s.t, s.t, s.t, s.t + interval '2 seconds',
                   CASE WHEN s.status IN ('delivered', 'opened', 'clicked')
                        THEN s.t + interval '5 seconds' END,
                   CASE WHEN s.status IN ('opened', 'clicked') THEN s.t + interval '20 minutes' END, s.t,
                   '', ''
              FROM (SELECT g, %(now)s::timestamptz - (random() * interval '60 days') AS t,
                           (ARRAY['delivered','delivered','opened','clicked','delivered','opened','delivered',
                                  'sent','failed','suppressed'])[1 + (random() * 9)::int] AS status
                      FROM generate_series(1, %(n)s) g) s
            """,
            {"r": recipients, "n": messages, "now": NOW},
        )
        cur.execute(
            """
            INSERT INTO orchestrator_event (recipient_id, name, properties, occurred_at, received_at)
            SELECT 1 + (random() * (%(r)s - 1))::int, 'purchase',
                   jsonb_build_object('amount', round((random() * 200)::numeric, 2)), t, t
              FROM (SELECT %(now)s::timestamptz - (random() * interval '30 days') AS t
                      FROM generate_series(1, %(n)s) g) s
            """,
            {"r": recipients, "n": conversions, "now": NOW},
        )
        # The journey: an enrollment per converting recipient (10 % held out), its journey messages as
        # step runs, and a conversion at the recipient's purchase for about half of them.
        cur.execute(
            """
            INSERT INTO journeys_enrollment
              (journey_id, version_id, recipient_id, status, trigger, step_id, seq, waiting, wait_event,
               channels_used, entered_at, ended_at, converted_at, exit_reason, held_out, holdout_share,
               error)
            SELECT %(j)s, %(v)s, e.recipient_id,
                   CASE WHEN e.id %% 2 = 0 THEN 'converted' ELSE 'exited' END, 'event', '', 3, '', '',
                   '[]'::jsonb, e.occurred_at - interval '2 days', e.occurred_at,
                   CASE WHEN e.id %% 2 = 0 THEN e.occurred_at END, '',
                   (e.id %% 10 = 0), 0.1, ''
              FROM (SELECT DISTINCT ON (recipient_id) id, recipient_id, occurred_at
                      FROM orchestrator_event WHERE name = 'purchase' ORDER BY recipient_id, id LIMIT %(n)s) e
            """,
            {"j": journey.pk, "v": version, "n": enrollments},
        )
        cur.execute(
            """
            INSERT INTO journeys_steprun (enrollment_id, seq, step_id, step_type, status, message_id, detail,
                                          started_at, finished_at)
            SELECT en.id, row_number() OVER (PARTITION BY en.id ORDER BY m.created_at) - 1,
                   (ARRAY['nudge','detail','prompt'])[1 + (m.id % 3)], 'send', 'sent', m.id, '',
                   m.created_at, m.created_at
              FROM journeys_enrollment en
              JOIN orchestrator_message m ON m.recipient_id = en.recipient_id AND m.source = 'journey'
                   AND m.created_at BETWEEN en.entered_at AND en.ended_at
             WHERE NOT en.held_out
            """
        )
        for table in (
            "orchestrator_message",
            "orchestrator_event",
            "journeys_enrollment",
            "journeys_steprun",
        ):
            cur.execute(f"ANALYZE {table}")


def timed(fn) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(RUNS):
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 1M messages / 100k conversions")
    parser.add_argument("--fresh", action="store_true", help="drop and rebuild the bench database")
    args = parser.parse_args()
    if args.fresh:
        base = os.environ.get("DATABASE_URL", "")
        bench_database_url("attribution", fresh=True)
        os.environ["DATABASE_URL"] = base  # django_setup points at the bench database itself
    django_setup("attribution")
    from django.db import connection

    from journeys.models import Journey
    from journeys.reports import attribution_report, overall_report, report_filters_parse

    populate(connection, scale=args.scale)
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM orchestrator_message")
        messages = cur.fetchone()[0]
    window = {"from": "2026-03-01", "to": "2026-03-31"}
    slug = Journey.objects.get().slug

    seconds, body = timed(lambda: attribution_report(filters=report_filters_parse(window)))
    print(
        f"attribution_report: {messages:,} messages, {body['conversions']:,} conversions "
        f"({body['attributed']:,} with a touch), 5 models x channel/journey/step: median {seconds:.2f} s "
        f"of {RUNS} (goal <= 5 s) {'OK' if seconds <= 5 else 'SLOW'}"
    )
    print("  linear credit:", body["linear"])
    seconds, body = timed(
        lambda: attribution_report(filters=report_filters_parse({**window, "journey": slug}))
    )
    print(f"attribution_report ?journey: {body['conversions']:,} goal conversions: median {seconds:.2f} s")
    seconds, body = timed(lambda: overall_report(filters=report_filters_parse(window)))
    print(
        "overall_report (the admin page: + sequences, journeys, global holdout, trend): "
        f"median {seconds:.2f} s"
    )


if __name__ == "__main__":
    main()
