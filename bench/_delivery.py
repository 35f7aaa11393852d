"""Shared by the delivery benchmarks: the world, a real qcluster, the hand-off old and new code
understand, the exactly-once check, the workers' resident memory, and `--before REF`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def django_setup_in_memory(**extra: str) -> None:
    """Django for a delivery bench: the in-memory providers, a real qcluster (not sync), the production
    configuration (DEBUG off, with a throwaway key); `extra` adds environment settings."""
    os.environ.update(
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        CHANNEL_SMS_BACKEND="channels_app.backends.sms.LocmemSmsBackend",
        CHANNEL_PUSH_BACKEND="channels_app.backends.push.LocmemPushBackend",
        Q_SYNC="false",
        LOG_LEVEL="WARNING",
        DEBUG="false",
        **extra,
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    os.environ.setdefault("SECRET_KEY", "bench-" + os.urandom(24).hex())
    import django

    django.setup()


# --- before and after in one run --------------------------------------------------------------------


def run_before(ref: str, script: str, argv: list[str]) -> dict | None:
    """Run this very bench script against the code at `ref` (a detached worktree in /tmp/bench-REF,
    this venv's Python) and return its RESULT line. The scripts are copied in, so the old code is measured
    by the new harness."""
    tree = Path(f"/tmp/bench-{ref}")
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True)
    for name in ("_common.py", "_delivery.py", script):
        shutil.copy(ROOT / "bench" / name, tree / "bench" / name)
    (tree / "var").mkdir(exist_ok=True)
    print(f"== before: {ref} in {tree}", flush=True)
    proc = subprocess.Popen(
        [sys.executable, str(tree / "bench" / script), *argv],
        cwd=tree,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    result = None
    for line in proc.stdout:
        print(f"[before] {line}", end="", flush=True)
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    proc.wait()
    print(f"== after: this checkout ({ROOT})", flush=True)
    return result


def strip_before(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(--before REF or None, the before run's arguments — --before-messages N as its --messages N —,
    this run's arguments)."""
    ref, rest, i = None, [], 0
    before_messages = None
    while i < len(argv):
        if argv[i] == "--before":
            ref, i = argv[i + 1], i + 2
        elif argv[i] == "--before-messages":
            before_messages, i = argv[i + 1], i + 2
        else:
            rest.append(argv[i])
            i += 1
    old = list(rest)
    if before_messages:
        old = [a for n, a in enumerate(rest) if a != "--messages" and (n == 0 or rest[n - 1] != "--messages")]
        old += ["--messages", before_messages]
    return ref, old, rest


def compare(before: dict | None, after: dict, keys: list[tuple[str, str]]) -> None:
    if before is None:
        return
    print("\nbefore → after")
    for key, label in keys:
        print(f"  {label:<28} {before.get(key)!s:>12} → {after.get(key)!s:>12}")


# --- the world ---------------------------------------------------------------------------------------


def accepted_messages(*, count: int, recipients: int, channels: list[str]) -> list[int]:
    """Recipients reachable on every channel and `count` accepted transactional messages over them,
    written directly (nothing is enqueued): the bench then hands them to delivery itself."""
    from django.utils import timezone

    from orchestrator.models import Channel, ContactPoint, Message, MessageStatus, Purpose, Recipient

    now = timezone.now()
    people = Recipient.objects.bulk_create(
        [Recipient(external_id=f"bench-{i:06d}", timezone="UTC") for i in range(recipients)], batch_size=2000
    )
    points = []
    for r in people:
        points += [
            ContactPoint(recipient=r, channel=Channel.EMAIL, address=f"{r.external_id}@example.com"),
            ContactPoint(recipient=r, channel=Channel.SMS, address="+14155550123"),
            ContactPoint(recipient=r, channel=Channel.PUSH, address=f"token-{r.external_id}"),
            ContactPoint(recipient=r, channel=Channel.IN_APP, address=""),
        ]
    ContactPoint.objects.bulk_create(points, batch_size=4000)
    content = {
        Channel.EMAIL: {"subject": "Your receipt", "body": "Thanks for your order."},
        Channel.SMS: {"body": "Your code is 428193."},
        Channel.PUSH: {"title": "Shipped", "body": "Track it.", "action_url": "app://orders"},
        Channel.IN_APP: {"title": "Your cart", "body": "Still there.", "action_url": "app://cart"},
    }
    ids = []
    for start in range(0, count, 10_000):
        rows = [
            Message(
                recipient=people[i % len(people)],
                channel=channels[i % len(channels)],
                requested_channel=channels[i % len(channels)],
                purpose=Purpose.TRANSACTIONAL,
                content=content[channels[i % len(channels)]],
                status=MessageStatus.ACCEPTED,
                created_at=now,
                decided_at=now,
                accepted_at=now,
            )
            for i in range(start, min(count, start + 10_000))
        ]
        ids += [m.pk for m in Message.objects.bulk_create(rows, batch_size=2000)]
    return ids


def hand_off(ids: list[int]) -> str:
    """What a commit of these accepted messages does in the code under test: one wake-up of the outbox
    (new), or the id tasks (old)."""
    from channels_app import delivery

    if hasattr(delivery, "deliveries_wake"):
        delivery.deliveries_wake(message_ids=ids)
        return "one outbox wake-up"
    delivery.messages_deliver_enqueue(message_ids=ids)
    return "id tasks (messages_deliver_enqueue)"


# --- the cluster -------------------------------------------------------------------------------------


def cluster_start(log_name: str) -> tuple[subprocess.Popen, object]:
    """A qcluster subprocess (Q_WORKERS workers), started and warmed up (a task ran)."""
    from django_q.models import Schedule, Success
    from django_q.tasks import async_task

    Schedule.objects.all().delete()  # only the deliveries under test run in this cluster
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "orchestrator.settings"}
    (ROOT / "var").mkdir(exist_ok=True)
    log = open(ROOT / "var" / log_name, "w")  # noqa: SIM115 - closed by cluster_stop
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    async_task("channels_app.tasks.messages_deliver_task", [], task_name="warm-up")
    deadline = time.monotonic() + 90
    while not Success.objects.filter(name="warm-up").exists():
        if time.monotonic() > deadline or cluster.poll() is not None:
            cluster_stop(cluster, log)
            sys.exit(f"qcluster did not start; see var/{log_name}")
        time.sleep(0.1)
    return cluster, log


def cluster_stop(cluster: subprocess.Popen, log) -> None:
    cluster.terminate()
    try:
        cluster.wait(timeout=20)
    except subprocess.TimeoutExpired:
        cluster.kill()
    log.close()


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                kids = []
            found += kids
            todo += kids
    return found


def rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else 0.0


def wait_delivered(*, total: int, timeout: float, cluster_pid: int, every: float = 0.5) -> dict:
    """Poll until no message is accepted (or timeout); sample the workers' resident memory on the way:
    the biggest worker's RSS when ~1% and when everything was delivered, and its peak."""
    from orchestrator.models import Message, MessageStatus

    t0 = time.monotonic()
    deadline = t0 + timeout
    pending, first_rss, peak = total, None, 0.0
    while pending and time.monotonic() < deadline:
        time.sleep(every)
        pending = Message.objects.filter(status=MessageStatus.ACCEPTED).count()
        rss = max((rss_mb(p) for p in descendants(cluster_pid)), default=0.0)
        peak = max(peak, rss)
        if first_rss is None and total - pending >= max(1, total // 100):
            first_rss = rss
    wall = time.monotonic() - t0
    last_rss = max((rss_mb(p) for p in descendants(cluster_pid)), default=0.0)
    return {
        "wall": wall,
        "pending": pending,
        "rss_first_mb": first_rss,
        "rss_last_mb": last_rss,
        "rss_peak_mb": peak,
    }


def exactly_once(total: int) -> dict:
    """Count the record: sent messages, attempts, successful attempts, messages with more than one."""
    from django.db.models import Count, Max, Min, Q

    from channels_app.models import DeliveryAttempt
    from orchestrator.models import Message, MessageStatus

    counts = Message.objects.aggregate(
        sent=Count("id", filter=Q(status=MessageStatus.SENT)),
        other=Count("id", filter=~Q(status=MessageStatus.SENT)),
    )
    attempts = DeliveryAttempt.objects.aggregate(
        n=Count("id"),
        ok=Count("id", filter=Q(outcome="success")),
        first=Min("started_at"),
        last=Max("finished_at"),
    )
    doubled = (
        DeliveryAttempt.objects.filter(outcome="success")
        .values("message_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    steady = (attempts["last"] - attempts["first"]).total_seconds() if attempts["first"] else float("nan")
    return {**counts, "attempts": attempts["n"], "ok": attempts["ok"], "doubled": doubled, "steady": steady}
