"""The re-drive: deferred messages whose time came are decided again, in queue order.

Claims them in batches with FOR UPDATE SKIP LOCKED (several passes may run at once), in queue order
(recipient, priority desc, oldest first); a batch then locks their recipients like any set-based decision
(governor.bulk), so a re-drive racing API sends or journey batches for the same people still counts
everything they committed. Each new decision is kept as a row of its own (the reason that explained the
wait is not overwritten away), and every status move goes through orchestrator.history.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import Q

from orchestrator.history import message_decisions_insert, messages_status_move_bulk
from orchestrator.models import Message, MessageStatus

from .bulk import Batch
from .models import ChannelPause, PauseMode
from .policy import Decision, policy_current

logger = logging.getLogger(__name__)

REDRIVE_BATCH = 500


def _held_release(*, now: datetime) -> int:
    """Make due again the messages held for a pause that is no longer active (a stale cache may have
    held one just after a resume)."""
    paused = ChannelPause.objects.filter(resumed_at__isnull=True, mode=PauseMode.DEFER).values("channel")
    return (
        Message.objects.filter(status=MessageStatus.DEFERRED, deliver_after__isnull=True)
        .exclude(channel__in=paused)
        .update(deliver_after=now)
    )


def deferred_redrive(*, now: datetime, limit: int) -> int:
    """Due work: re-decide deferred messages whose time came (deliver_after <= now).

    Expires those past expires_at, accepts or defers the rest again; listeners hear of every status change
    inside the transaction (the channels app enqueues delivery of the accepted on commit). Returns how many
    it handled.
    """
    _held_release(now=now)
    policy = policy_current()
    handled = 0
    while handled < limit:
        size = min(REDRIVE_BATCH, limit - handled)
        with transaction.atomic():
            claimed = list(
                Message.objects.select_for_update(skip_locked=True)
                .filter(
                    # Due, or held by a pause (no time) but already past its expiry: expire it now.
                    Q(deliver_after__lte=now) | Q(deliver_after__isnull=True, expires_at__lte=now),
                    status=MessageStatus.DEFERRED,
                )
                .order_by("recipient_id", "-priority", "created_at", "id")[:size]
            )
            if not claimed:
                break
            batch = Batch(policy=policy, at=now, recipient_ids=(m.recipient_id for m in claimed), lock=True)
            moves, decisions = [], []
            for m in claimed:
                try:
                    decision = batch.decide(
                        recipient_id=m.recipient_id,
                        channel=m.channel,
                        purpose=m.purpose,
                        priority=m.priority,
                        expires_at=m.expires_at,
                        created_at=m.created_at,
                        pk=m.pk,
                    )
                except Exception as exc:  # noqa: BLE001 - one bad row must not stop the re-drive
                    # Never sent, and it says why (an out-of-range time overflowing the arithmetic...).
                    logger.exception("deferred message %s could not be re-decided; suppressed", m.pk)
                    why = f"Could not be decided ({type(exc).__name__}: {exc}); it will not be sent."
                    decision = Decision(MessageStatus.SUPPRESSED, "error", why[:1000])
                previous = m.status
                m.status, m.rule, m.reason, m.decided_at = (
                    decision.status,
                    decision.rule,
                    decision.reason,
                    now,
                )
                if decision.status == MessageStatus.DEFERRED:
                    m.deliver_after = decision.deliver_after
                moves.append((m, previous))
                decisions.append((m.pk, decision.record(at=now)))
            messages_status_move_bulk(
                moves=moves, at=now, update_fields=["rule", "reason", "decided_at", "deliver_after"]
            )
            message_decisions_insert(pairs=decisions)
        handled += len(claimed)
        if len(claimed) < size:
            break
    return handled
