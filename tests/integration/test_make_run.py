"""`make run` stops cleanly: after SIGTERM to its process group no process of it survives (the server,
the qcluster and its workers included). It runs on a free port (PORT) and a throwaway SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from contextlib import suppress
from pathlib import Path

import pytest

from .servers import ROOT, free_port

pytestmark = pytest.mark.slow


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children of children included)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_make_run_leaves_no_process_behind_after_sigterm_to_its_group(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DEBUG", "SECRET_KEY"}}
    env.update(PORT=str(port), DATABASE_URL=f"sqlite:///{tmp_path / 'run.sqlite3'}", LOG_LEVEL="WARNING")
    log = open(tmp_path / "make-run.log", "w")  # noqa: SIM115 - closed below
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal gives it
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            with suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5).read()
                break
            assert make.poll() is None, (tmp_path / "make-run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "make run did not serve in time"
            time.sleep(0.5)
        time.sleep(2)  # the qcluster's workers are up by now
        tree = descendants(make.pid) | {make.pid}
        assert len(tree) >= 5, tree  # make, serve, the server, the qcluster and its processes

        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [pid for pid in tree if alive(pid)]
        assert not survivors, survivors
        output = (tmp_path / "make-run.log").read_text()
        assert "login: admin / " in output and "login: admin / orchestrator" not in output
    finally:
        with suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGKILL)
        for pid in descendants(make.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
