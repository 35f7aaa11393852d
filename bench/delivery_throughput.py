"""Delivery throughput: accepted messages → locmem providers through a real qcluster (messages/s).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch python bench/delivery_throughput.py [--messages N]

Uses its own database `<dbname>_bench_delivery` (dropped and re-created, then migrated), a qcluster
subprocess with Q_WORKERS workers, and the shipped delivery path: messages_deliver_enqueue batches ids
into tasks; each message is claimed, handed to its locmem/inbox backend and recorded. Prints wall-clock
and steady-state rates and checks that every message was handed over exactly once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import bench_database_url  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("Q_WORKERS", "2")))
    parser.add_argument("--batch", type=int, default=50, help="message ids per task")
    parser.add_argument("--timeout", type=float, default=150)
    args = parser.parse_args()

    url = bench_database_url("delivery", fresh=True)
    os.environ.update(
        DATABASE_URL=url,
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        CHANNEL_SMS_BACKEND="channels_app.backends.sms.LocmemSmsBackend",
        CHANNEL_PUSH_BACKEND="channels_app.backends.push.LocmemPushBackend",
        CHANNEL_TASK_BATCH_SIZE=str(args.batch),
        Q_WORKERS=str(args.workers),
        Q_SYNC="false",
        LOG_LEVEL="WARNING",
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    # DEBUG off (the production configuration) refuses the development key: a throwaway one per run.
    os.environ.setdefault("SECRET_KEY", "bench-" + os.urandom(24).hex())
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.models import Count, Max, Min, Q
    from django.utils import timezone
    from django_q.models import OrmQ, Success
    from django_q.tasks import async_task

    from channels_app.delivery import messages_deliver_enqueue
    from channels_app.models import DeliveryAttempt
    from orchestrator.models import Channel, ContactPoint, Message, MessageStatus, Purpose, Recipient

    print(f"database: {url.rsplit('/', 1)[-1]}; migrating…", flush=True)
    call_command("migrate", verbosity=0)
    from django_q.models import Schedule

    Schedule.objects.all().delete()  # only the deliveries under test run in this cluster

    now = timezone.now()
    recipients = Recipient.objects.bulk_create(
        [Recipient(external_id=f"bench-{i:06d}", timezone="UTC") for i in range(args.recipients)]
    )
    points = []
    for r in recipients:
        points += [
            ContactPoint(recipient=r, channel=Channel.EMAIL, address=f"{r.external_id}@example.com"),
            ContactPoint(recipient=r, channel=Channel.SMS, address="+14155550123"),
            ContactPoint(recipient=r, channel=Channel.PUSH, address=f"token-{r.external_id}"),
            ContactPoint(recipient=r, channel=Channel.IN_APP, address=""),
        ]
    ContactPoint.objects.bulk_create(points, batch_size=2000)
    content = {
        Channel.EMAIL: {"subject": "Your receipt", "body": "Thanks for your order."},
        Channel.SMS: {"body": "Your code is 428193."},
        Channel.PUSH: {"title": "Shipped", "body": "Track it.", "action_url": "app://orders"},
        Channel.IN_APP: {"title": "Your cart", "body": "Still there.", "action_url": "app://cart"},
    }
    channels = list(content)
    messages = Message.objects.bulk_create(
        [
            Message(
                recipient=recipients[i % len(recipients)],
                channel=channels[i % 4],
                requested_channel=channels[i % 4],
                purpose=Purpose.TRANSACTIONAL,
                content=content[channels[i % 4]],
                status=MessageStatus.ACCEPTED,
                created_at=now,
                decided_at=now,
                accepted_at=now,
            )
            for i in range(args.messages)
        ],
        batch_size=2000,
    )
    ids = [m.pk for m in messages]
    print(f"{len(ids)} accepted messages over {len(recipients)} recipients (4 channels)", flush=True)

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "orchestrator.settings"}
    log = open(ROOT / "var" / "bench_delivery_qcluster.log", "w")  # noqa: SIM115 - closed in finally
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        # Warm-up: wait until the cluster runs a task, so start-up time is not counted.
        async_task("channels_app.tasks.messages_deliver_task", [], task_name="warm-up")
        deadline = time.monotonic() + 60
        while not Success.objects.filter(name="warm-up").exists():
            if time.monotonic() > deadline or cluster.poll() is not None:
                print("qcluster did not start; see var/bench_delivery_qcluster.log")
                return 1
            time.sleep(0.1)

        t0 = time.monotonic()
        messages_deliver_enqueue(message_ids=ids)
        enqueued = time.monotonic() - t0
        deadline = t0 + args.timeout
        pending = len(ids)
        while pending and time.monotonic() < deadline:
            time.sleep(0.25)
            pending = Message.objects.filter(status=MessageStatus.ACCEPTED).count()
        wall = time.monotonic() - t0
    finally:
        cluster.terminate()
        try:
            cluster.wait(timeout=20)
        except subprocess.TimeoutExpired:
            cluster.kill()
        log.close()

    counts = Message.objects.aggregate(
        sent=Count("id", filter=Q(status=MessageStatus.SENT)),
        other=Count("id", filter=~Q(status=MessageStatus.SENT)),
    )
    attempts = DeliveryAttempt.objects.aggregate(
        n=Count("id"),
        ok=Count("id", filter=Q(outcome="success")),
        first=Min("started_at"),
        last=Max("finished_at"),
        dup=Count("message", distinct=True),
    )
    steady = (attempts["last"] - attempts["first"]).total_seconds() if attempts["first"] else float("nan")
    print()
    print(f"workers: {args.workers}   ids per task: {args.batch}   tasks: {-(-len(ids) // args.batch)}")
    print(f"enqueue:           {enqueued * 1000:.0f} ms")
    queued = OrmQ.objects.count()
    print(
        f"delivered (sent):  {counts['sent']} / {len(ids)}   not sent: {counts['other']}   queued: {queued}"
    )
    print(f"attempts:          {attempts['n']} ({attempts['ok']} success) for {attempts['dup']} messages")
    rate = counts["sent"] / wall
    print(f"wall clock:        {wall:.2f} s  →  {rate:.0f} messages/s (enqueue to all recorded)")
    rate = counts["sent"] / steady
    print(f"steady state:      {steady:.2f} s  →  {rate:.0f} messages/s (first claim to last record)")
    ok = counts["sent"] == len(ids) and attempts["ok"] == len(ids) == attempts["n"]
    print("exactly once:      " + ("yes — one successful attempt per message" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
