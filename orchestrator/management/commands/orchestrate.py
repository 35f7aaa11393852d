"""Run the due work: once (`--once`), or in a loop like the django-q2 schedule does."""

import time

from django.core.management.base import BaseCommand

from orchestrator.work import due_work_run


class Command(BaseCommand):
    help = "Run all due work: deferred messages whose time came, due journey steps, lost deliveries, retries."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")
        parser.add_argument("--interval", type=float, default=5.0, help="Seconds between passes (loop mode).")
        parser.add_argument("--limit", type=int, default=1000, help="Items per function per pass.")

    def handle(self, *args, **options):
        while True:
            # Drain: repeat while a pass still finds a full batch of work.
            while True:
                errors: dict[str, str] = {}
                handled = due_work_run(limit=options["limit"], errors=errors)
                for path, n in handled.items():
                    if path in errors:
                        self.stderr.write(f"{path}: failed: {errors[path]}")
                    elif n or options["verbosity"] > 1:
                        self.stdout.write(f"{path}: {n}")
                if max(handled.values(), default=0) < options["limit"]:
                    break
            if options["once"]:
                return
            time.sleep(options["interval"])
