"""`erase_recipient EXTERNAL_ID... --yes`: the right to erasure from a shell (orchestrator.erasure)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from orchestrator.erasure import recipient_erase
from orchestrator.models import Recipient


class Command(BaseCommand):
    help = (
        "Erase recipients' personal data (contact points, preferences, attributes, event properties, "
        "message content): their messages, decisions and enrollments stay, anonymised under a new "
        "anonymous id, so reports still add up. Audited (as 'command: erase_recipient'). Not reversible."
    )

    def add_arguments(self, parser):
        parser.add_argument("external_ids", nargs="+", metavar="EXTERNAL_ID")
        parser.add_argument("--yes", action="store_true", help="Do it (without it, only say what would go).")

    def handle(self, *args, **options):
        wanted = list(dict.fromkeys(options["external_ids"]))
        found = {
            r.external_id: r for r in Recipient.objects.filter(external_id__in=wanted, erased_at__isnull=True)
        }
        unknown = [x for x in wanted if x not in found]
        if unknown:
            raise CommandError(f"No recipient (or already erased): {', '.join(unknown)}. Nothing erased.")
        if not options["yes"]:
            self.stdout.write(f"Would erase {len(found)} recipient(s); run again with --yes to do it.")
            return
        for external_id in wanted:
            erasure = recipient_erase(recipient=found[external_id], actor=None, at=timezone.now())
            # The person is named only by the anonymous token from here on (the terminal may be logged).
            self.stdout.write(f"Erased: now {erasure.token} ({sum(erasure.counts.values())} rows scrubbed).")
