"""Delivery over HTTP: the Twilio-style SMS backend against a loopback server that answers after 100 ms.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/orch python bench/delivery_http.py \
        [--messages N] [--workers 2] [--latency 0.1] [--before REF [--before-messages N]]

Its own database `<dbname>_bench_delivery_http` (re-created), a fake provider (a threaded HTTP server in a
subprocess: POST .../Messages.json answers 201 with a sid after --latency seconds and counts requests per
idempotency token), a qcluster with --workers workers running the shipped delivery path
(channels_app.backends.sms.TwilioSmsBackend, SMS_HTTP_BASE_URL pointing at the server). Prints the rate,
the biggest worker's resident memory along the way, and checks exactly-once twice: one successful attempt
per message in the database, one request per message at the server. `--before REF` runs this same script
against REF first (`--before-messages` keeps the old, serial code's run short).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_database_url  # noqa: E402
from _delivery import (  # noqa: E402
    accepted_messages,
    cluster_start,
    cluster_stop,
    compare,
    exactly_once,
    hand_off,
    run_before,
    strip_before,
    wait_delivered,
)


def serve(port: int, latency: float) -> None:
    """The fake provider: 201 {"sid"} after `latency`; GET /stats → {"requests", "tokens", "repeats"}."""
    seen: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - the http.server API
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            token = self.headers.get("I-Twilio-Idempotency-Token", "")
            seen[token] = seen.get(token, 0) + 1
            time.sleep(latency)
            self._json(201, {"sid": f"SM{uuid.uuid4().hex}", "status": "queued"})

        def do_GET(self):  # noqa: N802
            total = sum(seen.values())
            self._json(200, {"requests": total, "tokens": len(seen), "repeats": total - len(seen)})

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

    Server(("127.0.0.1", port), Handler).serve_forever()


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), float(sys.argv[3]))
        return 0
    ref, before_argv, argv = strip_before(sys.argv[1:])
    before = run_before(ref, Path(__file__).name, before_argv) if ref else None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=64, help="CHANNEL_DELIVERY_THREADS per worker")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)

    url = bench_database_url("delivery_http", fresh=True)
    os.environ.update(
        DATABASE_URL=url,
        CHANNEL_SMS_BACKEND="channels_app.backends.sms.TwilioSmsBackend",
        SMS_HTTP_BASE_URL=f"http://127.0.0.1:{args.port}",
        SMS_HTTP_ACCOUNT_SID="ACbench",
        SMS_HTTP_AUTH_TOKEN="bench",
        SMS_HTTP_FROM="+15005550006",
        CHANNEL_DELIVERY_THREADS=str(args.threads),
        Q_WORKERS=str(args.workers),
        Q_SYNC="false",
        LOG_LEVEL="WARNING",
        DEBUG="false",
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    os.environ.setdefault("SECRET_KEY", "bench-" + os.urandom(24).hex())
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(args.port), str(args.latency)])
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django_q.models import OrmQ, Success

        print(f"database: {url.rsplit('/', 1)[-1]}; migrating…", flush=True)
        call_command("migrate", verbosity=0)
        ids = accepted_messages(count=args.messages, recipients=args.recipients, channels=["sms"])
        print(
            f"{len(ids)} accepted SMS over {args.recipients} recipients; provider answers in {args.latency}s"
        )
        stats = f"http://127.0.0.1:{args.port}/stats"
        cluster, log = cluster_start("bench_delivery_http_qcluster.log")
        try:
            t0 = time.monotonic()
            how = hand_off(ids)
            polled = wait_delivered(total=len(ids), timeout=args.timeout, cluster_pid=cluster.pid)
            wall = time.monotonic() - t0
        finally:
            cluster_stop(cluster, log)
        at_server = json.loads(urllib.request.urlopen(stats, timeout=10).read())
    finally:
        server.terminate()
        server.wait(timeout=10)

    tasks = Success.objects.exclude(name="warm-up").count() + OrmQ.objects.count()
    record = exactly_once(len(ids))
    rate = record["sent"] / wall
    steady = record["sent"] / record["steady"]
    print()
    print(f"workers: {args.workers}   threads each: {args.threads}   hand-off: {how}   tasks: {tasks}")
    print(f"delivered (sent):  {record['sent']} / {len(ids)}   not sent: {record['other']}")
    print(
        f"attempts:          {record['attempts']} ({record['ok']} success);"
        f" two successes: {record['doubled']}"
    )
    print(
        f"at the server:     {at_server['requests']} requests for {at_server['tokens']} messages"
        f" ({at_server['repeats']} repeats)"
    )
    print(f"wall clock:        {wall:.2f} s  →  {rate:.0f} messages/s")
    print(
        f"steady state:      {record['steady']:.2f} s  →  {steady:.0f} messages/s"
        " (first claim to last record)"
    )
    print(
        f"worker RSS (MB):   {polled['rss_first_mb'] or 0:.0f} after ~1%"
        f" → {polled['rss_last_mb']:.0f} at the end (peak {polled['rss_peak_mb']:.0f})"
    )
    ok = (
        record["sent"] == len(ids) == record["ok"] == record["attempts"] == at_server["requests"]
        and not record["doubled"]
        and not at_server["repeats"]
    )
    print(
        "exactly once:      " + ("yes — one successful attempt and one request per message" if ok else "NO")
    )
    after = {
        "messages": len(ids),
        "wall_rate": round(rate),
        "steady_rate": round(steady),
        "tasks": tasks,
        "requests": at_server["requests"],
        "exactly_once": ok,
        "rss_first_mb": round(polled["rss_first_mb"] or 0),
        "rss_last_mb": round(polled["rss_last_mb"]),
    }
    print("RESULT " + json.dumps(after), flush=True)
    compare(
        before,
        after,
        [
            ("messages", "messages"),
            ("wall_rate", "messages/s (wall clock)"),
            ("steady_rate", "messages/s (steady state)"),
            ("requests", "requests at the server"),
            ("exactly_once", "exactly once"),
            ("rss_last_mb", "worker RSS at the end (MB)"),
        ],
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
