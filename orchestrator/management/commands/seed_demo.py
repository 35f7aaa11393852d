"""Load the demo world: an admin login, recipients with history, and each app's demo data. Idempotent."""

import importlib
import logging
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from orchestrator.demo import demo_history_record, demo_people_seed, demo_recipients_seed, demo_segments_seed

# Each app may ship a `demo` module with `seed(stdout)`; they run in dependency order.
DEMO_MODULES = ["governor.demo", "channels_app.demo", "journeys.demo"]


def demo_password(login: str = "admin") -> str:
    """DEMO_<LOGIN>_PASSWORD when set; else a random one generated on the first run and kept (mode 0600) in
    var/demo-<login>-password, so the login stays the same across restarts. Never a constant."""
    given = os.environ.get(f"DEMO_{login.upper()}_PASSWORD")
    if given:
        return given
    path = settings.VAR_DIR / f"demo-{login}-password"
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    return password


class Command(BaseCommand):
    help = "Load a demo world (admin login, recipients with history, governor, channels, journeys)."

    def add_arguments(self, parser):
        parser.add_argument("--recipients", type=int, default=40)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        # django-q2 logs every enqueued task at INFO ("Enqueued [orchestrator] 1"): noise in a seed's output.
        q_logger = logging.getLogger("django-q")
        level = q_logger.level
        q_logger.setLevel(logging.WARNING)
        try:
            self._seed(options)
        finally:
            q_logger.setLevel(level)

    def _seed(self, options):
        username = os.environ.get("DEMO_ADMIN_USER", "admin")
        password = demo_password()
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=username, defaults={"email": "admin@example.com"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()

        people = demo_people_seed(password_for=demo_password)
        new = demo_recipients_seed(count=options["recipients"], progress=not options["no_progress"])
        self.stdout.write(f"Demo recipients: {new} new ({options['recipients']} in the demo).")
        self.stdout.write(f"Demo segment: {demo_segments_seed().name}.")
        recorded = demo_history_record(now=timezone.now())
        if recorded:
            self.stdout.write(f"Demo sends made around us (an ESP, braze, a legacy SMS service): {recorded}.")
        for path in DEMO_MODULES:
            try:
                module = importlib.import_module(path)
            except ModuleNotFoundError as exc:
                if exc.name != path:
                    raise
                continue
            module.seed(stdout=self.stdout)

        from orchestrator.models import Message, MessageStatus

        failed = Message.objects.filter(status=MessageStatus.FAILED).count()
        self.stdout.write(
            f"Dead letters: {failed} (Channels › Dead letters), each with its provider's error."
        )
        self.stdout.write(self.style.SUCCESS("Demo ready."))
        base = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
        self.stdout.write(f"  Admin: {base}/admin/  login: {username} / {password}")
        for login, secret, role in people:
            self.stdout.write(f"  {role}: login {login} / {secret}")
        self.stdout.write(f"  API docs: {base}/api/docs/")
