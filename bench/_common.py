"""Shared bench setup: a database of their own on the server of DATABASE_URL, Django set up on it."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent


def bench_database_url(name: str, *, fresh: bool = False) -> str:
    """Point DATABASE_URL at `<db>_bench_<name>` on the same server, created if missing (re-created when
    `fresh`), and return that URL."""
    import psycopg

    url = os.environ.get("DATABASE_URL")
    if not url or not url.startswith(("postgres://", "postgresql://")):
        sys.exit("The benchmarks run on PostgreSQL: run `make bench` or set DATABASE_URL=postgres://...")
    parsed = urlparse(url)
    dbname = f"{(parsed.path.lstrip('/') or 'orchestrator')}_bench_{name}"
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone():
            conn.execute(f'CREATE DATABASE "{dbname}"')
    bench_url = urlunparse(parsed._replace(path=f"/{dbname}"))
    os.environ["DATABASE_URL"] = bench_url
    return bench_url


def django_setup(name: str) -> str:
    """Point Django at the bench database, set it up and migrate it; returns the database URL."""
    url = bench_database_url(name)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    os.environ.setdefault("DEBUG", "false")  # measure the production configuration (no query log)
    os.environ.setdefault("SECRET_KEY", "bench-" + os.urandom(24).hex())  # DEBUG off refuses the dev key
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return url


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/mean in milliseconds."""
    ordered = sorted(samples_s)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(ordered) * 1000}
