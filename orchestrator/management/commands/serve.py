"""`make run`'s process: the web server and the task cluster side by side, stopped together.

Each child runs in a process group of its own; on SIGTERM, SIGINT (Ctrl-C) or SIGHUP, or when either
child dies, both groups get SIGTERM, then SIGKILL after a grace period — the whole group, so the
qcluster's worker processes go too (signalling only the qcluster left workers "stopping" for ever).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the development server and the task cluster (qcluster) together; SIGTERM stops both."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--grace", type=float, default=8.0, help="Seconds between TERM and KILL.")

    def handle(self, *args, **options):
        manage = str(settings.BASE_DIR / "manage.py")
        address = f"{options['host']}:{options['port']}"
        commands = {
            "qcluster": [sys.executable, manage, "qcluster"],
            "server": [sys.executable, manage, "runserver", address, "--noreload"],
        }
        # The handler only flips a flag: it runs in the main thread between bytecodes, and one that took a
        # lock (threading.Event.set) deadlocked when the signal landed while the main thread held that
        # lock inside Event.wait — `make run` then never stopped its children.
        stop: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: stop.append(signum))
        children: dict[str, subprocess.Popen] = {}
        try:
            for name, command in commands.items():
                children[name] = subprocess.Popen(command, start_new_session=True)
            self.stdout.write(f"Serving http://{address}/ with a task cluster; Ctrl-C or SIGTERM stops both.")
            while not stop:
                time.sleep(0.2)
                ended = [name for name, child in children.items() if child.poll() is not None]
                if ended:
                    self.stderr.write(f"{', '.join(ended)} stopped; stopping the rest.")
                    break
        finally:
            groups_stop(list(children.values()), grace=options["grace"])


def groups_stop(children: list[subprocess.Popen], *, grace: float) -> None:
    """TERM each child's process group, wait up to `grace` seconds, then KILL what is left of them."""
    for child in children:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        with suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
    # The leaders may be gone while their workers linger: KILL every group regardless.
    for child in children:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
