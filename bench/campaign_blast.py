"""A campaign to 100k recipients with a two-locale template, through the whole pipeline, against the
raw-SQL blast reference of bench/governor_blast.py in the same run.

Population: 100k recipients (half pt-BR, half en-US, four time zones), each with an email address and
0-3 engagement/promotional messages in the last 24 h; 1 in 50 opted out of promotional email. The
campaign: a segment (reachable by email) and a template with en and pt-BR variants naming the recipient.
Measured: from the approved campaign to every member decided, with `--workers` processes (default: the
cluster's 2 workers, which is how CAMPAIGN_TASKS tasks run it) each calling `campaigns_advance` as the
task does — the audience written down (one INSERT ... SELECT, by the first worker; the other waits for
it), then batches of recipients streamed by id and shared between the workers, each rendered in its
locale, linted, given its shelf life, decided by the governor, recorded, and its delivery enqueued on
commit. Also: each process's peak memory (recipients are never all loaded at once).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch python bench/campaign_blast.py \
        [--recipients 100000] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
# DEBUG off (the production configuration) refuses the development key: a throwaway one per run.
os.environ.setdefault("SECRET_KEY", "bench-" + os.urandom(24).hex())
os.environ.setdefault("DEBUG", "false")  # measure the production configuration
from _common import bench_database_url  # noqa: E402

NAME = "campaign_blast"
GOAL_SECONDS = 15.0
GOAL_MEMORY_MB = 300

TEMPLATE = {
    "key": "bench-spring",
    "channel": "email",
    "purpose": "promotional",
    "default_locale": "en",
    "locales": {
        "en": {
            "subject": "{{ recipient.attributes.name | default: 'Hello' }}, new this spring",
            "body": "Hi {{ recipient.attributes.name | default: 'there' }}, a few things you will like.",
        },
        "pt-BR": {
            "subject": "{{ recipient.attributes.name | default: 'Olá' }}, novidades da primavera",
            "body": "Oi {{ recipient.attributes.name | default: 'você' }}, coisas que você vai gostar.",
        },
    },
}
NAMES = ["Ana", "Bruno", "Carla", "Diego", "Eva", "Felipe", "Grace", "Hugo", "Iris", "João", "Kai", "Lia"]


def population(n: int) -> None:
    from django.db import connection
    from governor_blast import history_seed

    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO orchestrator_recipient"
            " (external_id, timezone, locale, attributes, created_at, updated_at) SELECT 'camp-' || g,"
            " (ARRAY['UTC','Europe/Paris','America/Sao_Paulo','Asia/Tokyo'])[g %% 4 + 1],"
            " CASE WHEN g %% 2 = 0 THEN 'pt-BR' ELSE 'en-US' END,"
            " jsonb_build_object('name', (%s::text[])[g %% %s + 1], 'plan', 'pro'), now(), now()"
            " FROM generate_series(1, %s) g",
            [NAMES, len(NAMES), n],
        )
        cur.execute(
            "INSERT INTO orchestrator_contactpoint (recipient_id, channel, address, opted_in,"
            " undeliverable_reason, soft_bounces, created_at, updated_at)"
            " SELECT id, 'email', external_id || '@example.com', true, '', 0, now(), now()"
            " FROM orchestrator_recipient"
        )
    history_seed()


def _worker(at, go, results) -> None:
    """One worker process: wait for the start, then run the campaign task's service until nothing is due."""
    import resource

    from journeys.campaigns import campaigns_advance

    go.wait()
    work = campaigns_advance(now=at, limit=10**9)
    results.put((work, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def campaign_run(at, workers: int) -> tuple[float, object, object, float]:
    from channels_app.models import MessageTemplate
    from channels_app.services import template_create
    from journeys.campaigns import CampaignWork, campaign_create, campaign_transition
    from orchestrator.models import Segment
    from orchestrator.services import segment_create

    segment = Segment.objects.filter(name="bench: email").first() or segment_create(
        name="bench: email", conditions=[{"field": "reachable", "op": "eq", "value": "email"}]
    )
    if not MessageTemplate.objects.filter(key=TEMPLATE["key"]).exists():
        template_create(data=dict(TEMPLATE))
    campaign = campaign_create(
        data={
            "name": f"bench {at:%H:%M:%S.%f}",
            "segment": segment.pk,
            "channel": "email",
            "purpose": "promotional",
            "template": TEMPLATE["key"],
        },
        now=at,
    )
    for action in ("propose", "approve"):
        campaign = campaign_transition(campaign=campaign, action=action, now=at)
    # Forked workers, each with its own connection (the parent's is closed first, never shared).
    from django.db import connections

    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(at, go, results)) for _ in range(workers)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # every worker forked and waiting
    start = time.perf_counter()
    go.set()
    outcomes = [results.get(timeout=600) for _ in procs]
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
        assert p.exitcode == 0, p.exitcode
    work = CampaignWork(
        started=sum(w.started for w, _ in outcomes),
        decided=sum(w.decided for w, _ in outcomes),
        refused=sum(w.refused for w, _ in outcomes),
        batches=sum(w.batches for w, _ in outcomes),
    )
    print(f"    batches per worker: {[w.batches for w, _ in outcomes]}")
    campaign.refresh_from_db()
    return elapsed, work, campaign, max(rss for _, rss in outcomes)


def cleanup() -> None:
    """The campaign's own rows and queued delivery tasks, then the blast's messages (governor_blast's)."""
    from django.db import connection
    from governor_blast import cleanup as messages_cleanup

    with connection.cursor() as cur:
        cur.execute("DELETE FROM journeys_campaignrecipient")
        cur.execute("DELETE FROM journeys_campaign")
        cur.execute("DELETE FROM django_q_ormq")
    messages_cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="worker processes sharing the campaign")
    args = parser.parse_args()
    db = bench_database_url(NAME, fresh=True).rsplit("/", 1)[-1]
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone
    from governor_blast import raw_blast

    call_command("migrate", verbosity=0)
    t0 = time.perf_counter()
    population(args.recipients)
    with connection.cursor() as cur:
        cur.execute("SELECT id FROM orchestrator_recipient ORDER BY id")
        ids = [row[0] for row in cur.fetchall()]
    print(f"campaign_blast on {db}: {len(ids)} recipients (half pt-BR), a two-locale email template")
    print(f"  set-up {time.perf_counter() - t0:.1f} s; default governor; 0-3 messages each in the last 24 h")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    raw_times, campaign_times, worker_peaks = [], [], []
    outcome = None
    for _ in range(args.rounds):
        raw_times.append(raw_blast(ids, timezone.now()))
        cleanup()
        elapsed, work, campaign, worker_peak = campaign_run(timezone.now(), args.workers)
        campaign_times.append(elapsed)
        worker_peaks.append(worker_peak)
        from django.db.models import Count

        from journeys.models import CampaignRecipient

        outcome = (
            work,
            campaign,
            Counter(
                dict(
                    CampaignRecipient.objects.filter(campaign=campaign)
                    .values_list("message__status")
                    .annotate(n=Count("id"))
                    .order_by()
                )
            ),
        )
        assert campaign.status == "done", (campaign.status, campaign.note)
        cleanup()
    del ids
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, *worker_peaks)
    raw, best = min(raw_times), min(campaign_times)
    work, campaign, statuses = outcome
    print(f"  raw SQL (one statement):    {raw:6.2f} s  {args.recipients / raw:9.0f} messages/s")
    print(
        f"  campaign (whole pipeline):  {best:6.2f} s  {args.recipients / best:9.0f} messages/s"
        f"  ({work.batches} batches, {args.workers} workers; rounds: "
        f"{', '.join(f'{t:.2f}' for t in campaign_times)} s)"
    )
    print(f"  campaign outcomes: {dict(sorted(statuses.items(), key=lambda kv: str(kv[0])))}")
    verdict = "goal met" if best <= GOAL_SECONDS * args.recipients / 100_000 else "over goal"
    print(f"  goal <= {GOAL_SECONDS:.0f} s per 100k: {verdict}; ratio campaign/raw: {raw / best:.0%}")
    print(
        f"  peak memory of any process: {peak:.0f} MB (after set-up {rss_before:.0f} MB; goal <= "
        f"{GOAL_MEMORY_MB} MB: {'met' if peak <= GOAL_MEMORY_MB else 'over'}); best of {args.rounds} rounds"
    )


if __name__ == "__main__":
    main()
