"""`history_import FILE`: record sends made elsewhere from CSV or JSON Lines (orchestrator.importing)."""

from __future__ import annotations

import os
import sys
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from orchestrator.importing import FORMATS, history_import, import_format


class Command(BaseCommand):
    help = (
        "Import sends made by other systems (an ESP, a legacy SMS service) into the one history from a CSV "
        "or JSON Lines file with the fields of POST messages/record/: recipient, channel, purpose, sent_at, "
        "source_system, external_id, content (optional). Every row is validated; bad rows are reported with "
        "their line number and reason and none of them is written; the rest is imported in batches. Safe to "
        "re-run: rows already recorded are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="A .csv or .jsonl file (.gz compressed too).")
        parser.add_argument("--format", choices=FORMATS, help="Default: from the file name.")
        parser.add_argument("--batch-size", type=int, help="Rows per transaction (default 5000).")
        parser.add_argument(
            "--create-recipients",
            action="store_true",
            help="Create unknown recipients (UTC unless the row has a timezone) instead of refusing the row.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Validate every row; write nothing.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (on stderr).")
        parser.add_argument(
            "--strict", action="store_true", help="Exit 1 when a row was bad (the rest is imported)."
        )

    def handle(self, *args, **options):
        path = options["file"]
        if not os.path.isfile(path):
            raise CommandError(f"No such file: {path}")
        try:
            import_format(path, options["format"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")

        def on_bad(line: int, errors: dict[str, list[str]]) -> None:
            reasons = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
            bar.clear()
            self.stdout.write(f"line {line}: {reasons}")

        started = time.perf_counter()
        bar = tqdm(
            total=os.path.getsize(path),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="history_import",
            file=sys.stderr,
            mininterval=0.5,
            disable=options["no_progress"],
        )
        with bar:
            summary = history_import(
                path=path,
                fmt=options["format"],
                batch_size=options["batch_size"],
                create_recipients=options["create_recipients"],
                dry_run=options["dry_run"],
                on_bad=on_bad,
                progress=bar,
            )
        seconds = time.perf_counter() - started
        verb = "would record" if options["dry_run"] else "recorded"
        rate = summary.rows / max(seconds, 1e-9)
        self.stdout.write(
            f"{summary.rows} rows: {summary.recorded} {verb}, {summary.duplicates} already recorded "
            f"(skipped), {summary.bad} bad ({seconds:.1f} s, {rate:,.0f} rows/s)."
        )
        if summary.bad and options["strict"]:
            raise CommandError(f"{summary.bad} bad row{'s' if summary.bad != 1 else ''} (listed above).")
