"""POST /api/v1/messages/ through gunicorn, as services call it: wrk at 32 and 128 clients, mixed purposes
over 10k recipients, against PostgreSQL; req/s, p50, p99, errors, PostgreSQL's share of the time, and each
worker's resident memory after 1k and after 100k requests.

    python bench/http_send.py                      # this checkout
    python bench/http_send.py --before 5aeda35     # the same load against REF too, in one run

`--before REF` checks REF out with `git worktree add --detach /tmp/bench-REF REF` and serves it with this venv
and this checkout's gunicorn settings (orchestrator/gunicorn_conf.py), so the two differ by the code only.
Each side gets a fresh database (`<db>_bench_http_<side>`), 10k recipients (email and push) and a service
token with the send scope. Needs `wrk` (Debian package) and DATABASE_URL pointing at a PostgreSQL server.

PostgreSQL vs Python: the database's own clock, `pg_stat_database.active_time` (milliseconds its backends
spent running statements in the bench database; read before and after the measured runs, each time once
the idle backends have reported, within 10 s), against the gunicorn workers' CPU time (utime + stime from
/proc) over the same runs, both divided by the requests served. Neither counts the network stack or wrk;
on a loaded 2-core machine PostgreSQL's active time includes waiting for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT  # noqa: E402

LUA = ROOT / "bench" / "http_send.lua"
CONF = ROOT / "orchestrator" / "gunicorn_conf.py"
RECIPIENTS = 10_000
STATS_FLUSH = 11  # s: an idle PostgreSQL backend reports its times within 10 s (PGSTAT_IDLE_INTERVAL)

SEED = textwrap.dedent(
    """
    from django.contrib.auth.models import Group, User
    from orchestrator.authority import SERVICE
    from orchestrator.models import ContactPoint, Recipient, ServiceToken
    n = {n}
    zones = ["UTC", "Europe/Lisbon", "America/New_York", "Asia/Tokyo"]
    if not Recipient.objects.filter(external_id="r1").exists():
        rs = Recipient.objects.bulk_create(
            [Recipient(external_id=f"r{{k}}", timezone=zones[k % 4]) for k in range(1, n + 1)],
            batch_size=2000,
        )
        ContactPoint.objects.bulk_create(
            [ContactPoint(recipient=r, channel="email", address=f"{{r.external_id}}@example.com") for r in rs]
            + [ContactPoint(recipient=r, channel="push", address=f"token-{{r.external_id}}") for r in rs],
            batch_size=2000,
        )
    user, _ = User.objects.get_or_create(username="bench-service")
    user.groups.add(Group.objects.get(name=SERVICE))
    token = ServiceToken(name=f"bench-{{ServiceToken.objects.count()}}", user=user, scopes=["send"])
    raw = token.key_issue()
    token.save()
    print("TOKEN", raw)
    """
)


def log(*parts) -> None:
    print(*parts, flush=True)


def database_url(name: str) -> str:
    """A fresh database `<db>_bench_http_<name>` on DATABASE_URL's server."""
    import psycopg

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/http_send.py runs on PostgreSQL: set DATABASE_URL=postgres://...")
    parsed = urlparse(url)
    dbname = f"{parsed.path.lstrip('/') or 'orchestrator'}_bench_http_{name}"
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return urlunparse(parsed._replace(path=f"/{dbname}"))


def server_env(tree: Path, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        DEBUG="false",
        SECRET_KEY="bench-" + os.urandom(24).hex(),  # DEBUG off refuses the development key
        DJANGO_SETTINGS_MODULE="orchestrator.settings",
        PYTHONPATH=str(tree),  # the tree's code, not the one this venv installed in editable mode
        ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    return env


def prepare(tree: Path, url: str) -> str:
    env = server_env(tree, url)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=tree, env=env, check=True)
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SEED.format(n=RECIPIENTS)],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    token = next(line.split()[1] for line in out.splitlines() if line.startswith("TOKEN "))
    log(f"  migrated and seeded {RECIPIENTS} recipients in {time.perf_counter() - t0:.0f} s")
    return token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workers_of(master: int) -> list[int]:
    try:
        text = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return []
    return sorted(int(p) for p in text.split())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pg_active_ms(url: str) -> float:
    import psycopg

    name = urlparse(url).path.lstrip("/")
    admin = urlunparse(urlparse(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT active_time FROM pg_stat_database WHERE datname = %s", [name]).fetchone()
    return float(row[0] or 0)


def wrk(port: int, token: str, clients: int, seconds: int, ceiling: str = "") -> dict:
    env = dict(os.environ, TOKEN=token, RECIPIENTS=str(RECIPIENTS))
    if ceiling:
        env["CEILING_PATH"] = ceiling
    threads = min(clients, 4)
    cmd = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA)]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}"], env=env, capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def warm(port: int, token: str, count: int) -> None:
    """`count` requests over 4 keep-alive connections (sequential per connection)."""
    import http.client
    import random
    from concurrent.futures import ThreadPoolExecutor

    def one_connection(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for _ in range(n):
            body = json.dumps(
                {
                    "recipient": f"r{random.randint(1, RECIPIENTS)}",
                    "channel": "email",
                    "purpose": "transactional",
                    "content": {"subject": "Your receipt", "body": "Thanks for your order."},
                }
            )
            conn.request("POST", "/api/v1/messages/", body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 201:
                raise RuntimeError(f"warm-up request answered {resp.status}")
        conn.close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one_connection, [count // 4] * 4))


def run_side(name: str, tree: Path, args) -> dict:
    log(f"== {name}: {tree}")
    url = database_url(name)
    token = prepare(tree, url)
    port = free_port()
    env = server_env(tree, url)
    env.update(
        WEB_BIND=f"127.0.0.1:{port}",
        WEB_WORKERS=str(args.workers),
        WEB_THREADS=str(args.threads),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(CONF), "orchestrator.wsgi"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(f"/tmp/bench-http-{name}.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    side: dict = {"name": name}
    try:
        deadline = time.monotonic() + 60
        while len(workers_of(server.pid)) < args.workers:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"gunicorn did not start: see /tmp/bench-http-{name}.log")
            time.sleep(0.2)
        time.sleep(1)
        warm(port, token, 1000)
        pids = workers_of(server.pid)
        side["rss_1k"] = {pid: rss_mib(pid) for pid in pids}
        time.sleep(STATS_FLUSH)
        pg0 = pg_active_ms(url)
        cpu0 = sum(cpu_seconds(p) for p in pids)
        served = 1000
        side["runs"] = {}
        for clients in args.clients:
            result = wrk(port, token, clients, args.seconds)
            served += result["requests"]
            side["runs"][clients] = result
            log(
                f"  {clients:>4} clients: {result['rps']:7.0f} req/s  p50 {result['p50_us'] / 1000:6.1f} ms"
                f"  p99 {result['p99_us'] / 1000:6.1f} ms  codes {result['codes']}"
                f"  decisions {result['decisions']}  socket errors {result['socket_errors']}"
            )
        cpu1 = sum(cpu_seconds(p) for p in workers_of(server.pid))
        side["ceiling"] = {}
        if args.ceiling and name == "after":
            # The same server answering GET /healthz (no database, no DRF): what this stack can serve on this
            # machine with nothing behind the request, the bound any send stays under.
            for clients in args.clients:
                result = wrk(port, token, clients, args.seconds, ceiling="/healthz")
                side["ceiling"][clients] = result
                log(
                    f"  ceiling, GET /healthz, {clients:>4} clients: {result['rps']:7.0f} req/s"
                    f"  p50 {result['p50_us'] / 1000:6.1f} ms  p99 {result['p99_us'] / 1000:6.1f} ms"
                    f"  codes {result['codes']}"
                )
        time.sleep(STATS_FLUSH)
        side["pg_active_ms"] = pg_active_ms(url) - pg0
        side["measured_requests"] = served - 1000
        side["worker_cpu_s"] = cpu1 - cpu0
        side["served"] = served
        side["rss_end"] = {pid: rss_mib(pid) for pid in workers_of(server.pid)}
        report(side)
        if args.memory_requests and name == "after":
            side["memory_non2xx"] = 0
            while served < args.memory_requests:
                seconds = max(5, min(60, int((args.memory_requests - served) / max(result["rps"], 1)) + 2))
                more = wrk(port, token, 32, seconds)
                served += more["requests"]
                side["memory_non2xx"] += sum(v for k, v in more["codes"].items() if not k.startswith("2"))
                rss = "; ".join(f"{pid}: {rss_mib(pid):.1f} MiB" for pid in workers_of(server.pid))
                log(f"  memory run: {served} requests served ({more['rps']:.0f} req/s), worker RSS {rss}")
            side["served"] = served
            side["rss_end"] = {pid: rss_mib(pid) for pid in workers_of(server.pid)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    return side


def report(side: dict) -> None:
    n = side["measured_requests"]
    log(f"== {side['name']}")
    for clients, r in side["runs"].items():
        non2xx = sum(v for k, v in r["codes"].items() if not k.startswith("2"))
        log(
            f"  {clients:>4} clients: {r['rps']:7.0f} req/s, p50 {r['p50_us'] / 1000:.1f} ms,"
            f" p99 {r['p99_us'] / 1000:.1f} ms, {r['requests']} requests, non-2xx {non2xx},"
            f" socket errors {r['socket_errors']}; decisions {r['decisions']}"
        )
    for clients, r in side.get("ceiling", {}).items():
        log(
            f"  ceiling (GET /healthz, no database) {clients:>4} clients: {r['rps']:7.0f} req/s,"
            f" p50 {r['p50_us'] / 1000:.1f} ms, p99 {r['p99_us'] / 1000:.1f} ms"
        )
    pg_ms = side["pg_active_ms"] / max(n, 1)
    py_ms = side["worker_cpu_s"] * 1000 / max(n, 1)
    log(
        f"  per request: PostgreSQL active {pg_ms:.2f} ms, gunicorn workers' CPU {py_ms:.2f} ms"
        f" -> PostgreSQL {100 * pg_ms / (pg_ms + py_ms):.0f} % / Python {100 * py_ms / (pg_ms + py_ms):.0f} %"
    )
    rss_1k, rss_end = side["rss_1k"], side["rss_end"]
    rows = [
        f"{pid}: {rss_1k[pid]:.1f} -> {rss_end.get(pid, float('nan')):.1f} MiB"
        f" ({100 * (rss_end.get(pid, 0) / rss_1k[pid] - 1):+.1f} %)"
        for pid in rss_1k
    ]
    log(f"  worker RSS after 1k -> after {side['served']} requests: " + "; ".join(rows))
    if side.get("memory_non2xx") is not None:
        log(f"  non-2xx during the memory run: {side['memory_non2xx']}")


PROFILE = textwrap.dedent(
    """
    import cProfile, json, pstats, random, time
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from orchestrator.models import ServiceToken
    token = ServiceToken(name=f"profile-{{time.time()}}", user=User.objects.get(username="bench-service"))
    token.scopes = ["send"]
    raw = token.key_issue()
    token.save()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {{raw}}", HTTP_HOST="127.0.0.1")
    purposes = ["transactional", "engagement", "promotional", "alert"]

    def one():
        body = {{"recipient": f"r{{random.randint(1, {n})}}", "channel": "email",
                 "purpose": random.choice(purposes), "content": {{"subject": "Hello", "body": "Hi there."}}}}
        resp = client.post("/api/v1/messages/", json.dumps(body), content_type="application/json")
        assert resp.status_code == 201, resp.content

    for _ in range(50):
        one()
    with CaptureQueriesContext(connection) as captured:
        one()
    print("statements for one send (query log):", len(captured.captured_queries))
    for q in captured.captured_queries:
        print("   ", q["sql"][:110])
    count = {count}
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for _ in range(count):
        one()
    profiler.disable()
    per_send = (time.perf_counter() - t0) * 1000 / count
    print(f"in-process (Django test client, no HTTP): {{per_send:.2f}} ms a send")
    stats = pstats.Stats(profiler)
    groups = {{}}
    for (path, _, func), (_, _, tottime, _, _) in stats.stats.items():
        if "psycopg" in path and func in ("wait", "_execute_send", "_exec_command", "_commit_gen"):
            group = "waiting on PostgreSQL (psycopg send/wait)"
        elif "psycopg" in path:
            group = "psycopg (adapting, results)"
        elif "rest_framework" in path:
            group = "DRF"
        elif "/django/db/" in path:
            group = "Django ORM"
        elif "/django/" in path:
            group = "Django (handlers, middleware, test client)"
        elif any(app in path for app in ("/orchestrator/", "/governor/", "/channels_app/")):
            group = "the orchestrator's own code"
        else:
            group = "other (stdlib, json, logging, django-q, ...)"
        groups[group] = groups.get(group, 0) + tottime
    total = sum(groups.values())
    for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {{group:48}} {{seconds * 1000 / count:6.2f}} ms a send  {{100 * seconds / total:4.0f}} %")
    ours = r"orchestrator|governor|channels_app|rest_framework|psycopg"
    stats.sort_stats("cumulative").print_stats(ours, 40)
    stats.sort_stats("tottime").print_stats(25)
    """
)


def profile(args) -> int:
    """Profile sends in-process against this checkout's seeded bench database (run the bench first)."""
    url = urlunparse(urlparse(os.environ["DATABASE_URL"])._replace(path=""))
    name = f"{urlparse(os.environ['DATABASE_URL']).path.lstrip('/')}_bench_http_after"
    env = server_env(ROOT, f"{url}/{name}")
    code = PROFILE.format(n=RECIPIENTS, count=args.profile)
    return subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git ref to measure too, checked out under /tmp/bench-REF")
    parser.add_argument("--clients", default="32,128", help="concurrent clients per run (comma-separated)")
    parser.add_argument("--seconds", type=int, default=20, help="each wrk run's length")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 2) + 1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--memory-requests",
        type=int,
        default=100_000,
        help="keep loading this checkout until it served this many requests, for the RSS figure (0: off)",
    )
    parser.add_argument(
        "--ceiling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also load GET /healthz on the same server: the stack's ceiling with no send behind it",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        help="instead: profile this many sends in-process (cProfile) on the seeded 'after' database",
    )
    args = parser.parse_args(argv)
    if args.profile:
        return profile(args)
    args.clients = [int(c) for c in args.clients.split(",")]
    if subprocess.run(["which", "wrk"], capture_output=True).returncode:
        sys.exit("wrk is missing: apt-get install -y wrk")
    load = os.getloadavg()[0]
    log(f"machine: {os.cpu_count()} cores, load average {load:.1f} (shared: other work may run meanwhile)")
    log(f"gunicorn: {args.workers} workers x {args.threads} threads (gthread), {CONF.relative_to(ROOT)}")
    sides = []
    if args.before:
        tree = Path(f"/tmp/bench-{args.before}")
        if not tree.exists():
            git = ["git", "worktree", "add", "--detach", str(tree), args.before]
            subprocess.run(git, cwd=ROOT, check=True)
        sides.append(run_side("before", tree, args))
    sides.append(run_side("after", ROOT, args))
    log("")
    for side in sides:
        report(side)  # again, together (the after side's RSS now after the memory run)
    log(f"load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
