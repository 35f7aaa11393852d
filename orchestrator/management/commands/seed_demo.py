"""Load the demo world: an admin login, recipients with history, and each app's demo data. Idempotent."""

import importlib
import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from orchestrator.demo import demo_campaign_send, demo_history_record, demo_recipients_seed

# Each app may ship a `demo` module with `seed(stdout)`; they run in dependency order.
DEMO_MODULES = ["governor.demo", "channels_app.demo", "journeys.demo"]


class Command(BaseCommand):
    help = "Load a demo world (admin login, recipients with history, governor, channels, journeys)."

    def add_arguments(self, parser):
        parser.add_argument("--recipients", type=int, default=40)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        username = os.environ.get("DEMO_ADMIN_USER", "admin")
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "orchestrator")
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=username, defaults={"email": "admin@example.com"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()

        new = demo_recipients_seed(count=options["recipients"], progress=not options["no_progress"])
        self.stdout.write(f"Demo recipients: {new} new ({options['recipients']} in the demo).")
        for path in DEMO_MODULES:
            try:
                module = importlib.import_module(path)
            except ModuleNotFoundError as exc:
                if exc.name != path:
                    raise
                continue
            module.seed(stdout=self.stdout)
        recorded = demo_history_record(now=timezone.now())
        if recorded:
            self.stdout.write(f"Demo sends made around us (an ESP, braze, a legacy SMS service): {recorded}.")
        sent = demo_campaign_send(now=timezone.now())
        if sent:
            self.stdout.write(f"Demo campaign: {sent} promotional emails through the send pipeline.")

        self.stdout.write(self.style.SUCCESS("Demo ready."))
        self.stdout.write(f"  Admin: http://127.0.0.1:8000/admin/  login: {username} / {password}")
        self.stdout.write("  API docs: http://127.0.0.1:8000/api/docs/")
