"""The governor's part of the demo world: the default governor, and one small campaign decided by it so
the governor page has something to show. Idempotent."""

from __future__ import annotations

from django.utils import timezone

from orchestrator.models import Message, Recipient, Source

from .defaults import defaults_install
from .models import CapRule, QuietHours
from .services import MessageDraft, messages_decide_bulk

DEMO_CAMPAIGN = "demo: weekly picks"


def seed(*, stdout) -> None:
    created = defaults_install(CapRule, QuietHours)
    stdout.write(f"Governor: default caps and quiet hours ready ({created} created).")
    if Message.objects.filter(source=Source.CAMPAIGN, source_ref=DEMO_CAMPAIGN).exists():
        return
    recipients = list(Recipient.objects.filter(external_id__startswith="demo-").values_list("pk", flat=True))
    if not recipients:
        return
    drafts = [
        MessageDraft(
            recipient_id=pk,
            channel="email",
            purpose="promotional",
            content={"subject": "New this week", "body": "A few things we think you will like."},
            priority=30,
            source=Source.CAMPAIGN,
            source_ref=DEMO_CAMPAIGN,
        )
        for pk in recipients
    ]
    messages = messages_decide_bulk(drafts=drafts, at=timezone.now())
    outcome = {}
    for m in messages:
        if m is None:  # its recipient erased meanwhile
            continue
        outcome[m.status] = outcome.get(m.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(outcome.items()))
    stdout.write(
        f"Governor: demo campaign {DEMO_CAMPAIGN!r} decided for {len(messages)} recipients: {summary}."
    )
