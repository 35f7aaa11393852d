"""Run every benchmark under bench/ in turn (`make bench`); `make bench BENCH_ARGS=history_query` runs one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    # Every benchmark runs the production configuration (DEBUG off), which refuses the development key.
    os.environ.setdefault("SECRET_KEY", "bench-" + os.urandom(24).hex())
    names = argv or sorted(
        p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "run"
    )
    failed = []
    for name in names:
        print(f"== bench/{name}.py", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py")], cwd=HERE)
        print(
            f"== {name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.perf_counter() - t0:.1f} s\n",
            flush=True,
        )
        if rc:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
