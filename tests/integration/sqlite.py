"""Drive manage.py on a throwaway SQLite file in subprocesses (the embedded default of `make run`)."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sqlite_manage(db_path: Path) -> Callable[..., str]:
    """A `manage(*args) -> stdout` running against `db_path` with tasks inline; fails on a non-zero exit."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db_path}",
        "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
        "Q_SYNC": "1",
        "LOG_LEVEL": "WARNING",
    }

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    return manage
