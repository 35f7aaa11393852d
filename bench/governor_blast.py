"""A campaign blast through the governor, set-based, against one raw SQL statement doing the same work.

100k recipients (0-3 engagement/promotional messages each in the last 24 h) get one promotional email.
Governed: governor.services.messages_decide_bulk (locks in id order, grouped window counts, opt-outs,
the queue ahead, every rule and quiet hours, reasons, bulk insert). Raw: one INSERT ... SELECT that
locks the recipients, counts the 24 h window and inserts accepted/deferred rows. Prints the ratio.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch python bench/governor_blast.py [--recipients 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
# DEBUG off (the production configuration) refuses the development key: a throwaway one per run.
os.environ.setdefault("SECRET_KEY", "bench-" + os.urandom(24).hex())
os.environ.setdefault("DEBUG", "false")  # measure the production configuration
from _common import bench_database_url  # noqa: E402

NAME = "governor_blast"

COLUMNS = (
    "recipient_id, channel, requested_channel, channel_reason, purpose, priority, content, status, rule,"
    " reason, deliver_after, expires_at, warnings, source, source_ref, provider, provider_message_id,"
    " attempts, last_error, created_at, decided_at, accepted_at, deferred_at, updated_at, to_address,"
    " source_system, external_id"
)
CONTENT = {"subject": "New this week", "body": "A few things we think you will like."}


def setup_population(n: int) -> list[int]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO orchestrator_recipient"
            " (external_id, timezone, locale, attributes, created_at, updated_at) SELECT 'blast-' || g,"
            " (ARRAY['UTC','Europe/Paris','America/New_York','Asia/Tokyo'])[g %% 4 + 1],"
            " 'en-US', '{}'::jsonb, now(), now() FROM generate_series(1, %s) g",
            [n],
        )
    history_seed()
    with connection.cursor() as cur:
        cur.execute("SELECT id FROM orchestrator_recipient ORDER BY id")
        return [row[0] for row in cur.fetchall()]


def history_seed() -> None:
    """Every recipient's last 24 h (0-3 cleared engagement messages) and a few promotional email
    opt-outs, so the governed path has caps to count and something to suppress (campaign_blast too)."""
    from django.db import connection

    with connection.cursor() as cur:
        # 0-3 cleared engagement/promotional messages per recipient in the last 24 h.
        cur.execute(
            f"INSERT INTO orchestrator_message ({COLUMNS})"
            " SELECT r.id, 'email', 'email', '', 'engagement', 50,"
            " '{\"subject\": \"Earlier\", \"body\": \"...\"}'::jsonb, 'delivered', '', 'Within every cap.',"
            " NULL, NULL, '[]'::jsonb, 'api', '', '', '', 0, '', now() - k * interval '5 hours',"
            " now() - k * interval '5 hours', now() - k * interval '5 hours', NULL, now(), '', '', ''"
            " FROM orchestrator_recipient r CROSS JOIN generate_series(1, 3) k WHERE k <= r.id % 4"
        )
        # A few opt-outs, so the governed path has something to suppress.
        cur.execute(
            "INSERT INTO orchestrator_preference (recipient_id, channel, purpose, opted_in, updated_at)"
            " SELECT id, 'email', 'promotional', false, now() FROM orchestrator_recipient WHERE id % 50 = 0"
        )
        cur.execute("ANALYZE")


RAW_BLAST = f"""
WITH ids AS (SELECT unnest(%(ids)s::bigint[]) AS id),
locked AS (
    SELECT r.id FROM orchestrator_recipient r JOIN ids USING (id) ORDER BY r.id FOR UPDATE OF r
),
counts AS (
    SELECT m.recipient_id, count(*) AS c, min(m.accepted_at) AS oldest
    FROM orchestrator_message m JOIN ids ON m.recipient_id = ids.id
    WHERE m.accepted_at > %(lo)s AND m.accepted_at <= %(at)s AND m.purpose IN ('engagement', 'promotional')
    GROUP BY m.recipient_id
)
INSERT INTO orchestrator_message ({COLUMNS})
SELECT l.id, 'email', 'email', '', 'promotional', 50, %(content)s,
    CASE WHEN coalesce(c.c, 0) < 3 THEN 'accepted' ELSE 'deferred' END,
    CASE WHEN coalesce(c.c, 0) < 3 THEN '' ELSE 'Engagement + promotional, 24 h' END,
    CASE WHEN coalesce(c.c, 0) < 3 THEN 'Within every cap.'
         ELSE coalesce(c.c, 0) || ' of 3 messages in the last 24 h' END,
    CASE WHEN coalesce(c.c, 0) < 3 THEN NULL ELSE c.oldest + interval '24 hours' END,
    NULL, '[]'::jsonb, 'campaign', 'blast-raw', '', '', 0, '', %(at)s, %(at)s,
    CASE WHEN coalesce(c.c, 0) < 3 THEN %(at)s END,
    CASE WHEN coalesce(c.c, 0) < 3 THEN NULL ELSE %(at)s END,
    %(at)s, '', '', ''
FROM locked l LEFT JOIN counts c ON c.recipient_id = l.id
"""


def raw_blast(ids: list[int], at) -> float:
    from datetime import timedelta

    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(
                RAW_BLAST, {"ids": ids, "lo": at - timedelta(hours=24), "at": at, "content": Jsonb(CONTENT)}
            )
            assert cur.rowcount == len(ids), cur.rowcount
        conn.commit()
        return time.perf_counter() - start


def governed_blast(ids: list[int], at) -> tuple[float, dict[str, int]]:
    from collections import Counter

    from governor.services import MessageDraft, messages_decide_bulk

    drafts = [
        MessageDraft(
            recipient_id=rid,
            channel="email",
            purpose="promotional",
            content=CONTENT,
            source="campaign",
            source_ref="blast-governed",
        )
        for rid in ids
    ]
    start = time.perf_counter()
    messages = messages_decide_bulk(drafts=drafts, at=at)
    elapsed = time.perf_counter() - start
    assert len(messages) == len(ids) and all(m.pk for m in messages[:10])
    return elapsed, Counter(m.status for m in messages)


def cleanup() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "DELETE FROM orchestrator_messagedecision WHERE message_id IN"
            " (SELECT id FROM orchestrator_message WHERE source = 'campaign')"
        )
        # The messages' delete checks each one against the decisions with a plan this session cached
        # when that table was empty (a sequential scan): re-planned after ANALYZE, else 100k scans of
        # 100k dead rows whenever autovacuum is behind on a busy machine.
        cur.execute("ANALYZE orchestrator_messagedecision")
        cur.execute("DELETE FROM orchestrator_message WHERE source = 'campaign'")
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE orchestrator_message")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    db = bench_database_url(NAME, fresh=True).rsplit("/", 1)[-1]
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    t0 = time.perf_counter()
    ids = setup_population(args.recipients)
    print(f"governor_blast on {db}: {len(ids)} recipients, one promotional email each")
    print(f"  set-up {time.perf_counter() - t0:.1f} s; default governor; 0-3 messages each in the last 24 h")
    raw_times, governed_times = [], []
    outcomes = None
    for _ in range(args.rounds):
        at = timezone.now()
        raw_times.append(raw_blast(ids, at))
        cleanup()
        at = timezone.now()
        elapsed, outcomes = governed_blast(ids, at)
        governed_times.append(elapsed)
        cleanup()
    raw, governed = min(raw_times), min(governed_times)
    print(f"  raw SQL (one statement): {raw:6.2f} s  {len(ids) / raw:9.0f} messages/s")
    print(f"  governed (set-based):    {governed:6.2f} s  {len(ids) / governed:9.0f} messages/s")
    print(f"  governed outcomes: {dict(sorted(outcomes.items()))}")
    ratio = raw / governed
    verdict = "goal met" if ratio >= 0.25 else "below goal"
    print(f"  ratio governed/raw: {ratio:.0%} (goal >= 25%: {verdict}); best of {args.rounds} rounds each")


if __name__ == "__main__":
    main()
