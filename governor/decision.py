"""One decision: read what it needs for one recipient (holding their row lock) and decide; the dry run.

Every message is decided in ONE short transaction that locks the recipient row, counts the history and
writes the Message with its decision: concurrent decisions for one recipient serialize on that lock, so
none slips past a cap (see governor.counting for which statement sees what). No provider call happens
under the lock.

Window edges: a rule counts messages cleared after `at - window`. A message cleared exactly one window ago
no longer counts, so its slot frees at exactly accepted_at + window.

Priority arbitration: due deferred messages (deliver_after <= at, not expired) that are ahead in the queue
(higher priority, or the same priority and older) count against the caps as if taken now, so a newcomer
cannot steal the slot they are waiting for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from orchestrator.db import as_datetime, hot_cursor, is_postgres
from orchestrator.history import messages_insert, stamp_field
from orchestrator.models import Message, MessageStatus, Preference, Recipient, Source
from orchestrator.selectors import HeldRecipient
from orchestrator.snapshot import VERSION_SQL, Snapshot, snapshot_confirmed, snapshot_unconfirmed

from .counting import kth_oldest_cleared, recipient_uses_sql, window_params
from .policy import Decision, Policy, RuleUse, decide, policy_current

RECIPIENT_TABLE = Recipient._meta.db_table
PREFERENCE_TABLE = Preference._meta.db_table


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class MessageDraft:
    """A message ready for the governor: validated, channel chosen, linted (the pipeline builds it)."""

    recipient_id: int
    channel: str
    purpose: str
    content: dict[str, Any]
    priority: int = 50
    expires_at: datetime | None = None
    source: str = "api"
    source_ref: str = ""
    requested_channel: str = ""
    channel_reason: str = ""
    warnings: list[dict[str, str]] = field(default_factory=list)
    to_address: str = ""
    deliver_after: datetime | None = None
    # The channel's default shelf life, applied when expires_at is None (see policy.decide).
    shelf_life: timedelta | None = None
    # Set when the caller already holds the recipient's row lock in this transaction and read their time
    # zone and this opt-out under it (orchestrator.selectors.recipient_hold): statement 1 is skipped.
    held: HeldRecipient | None = None


def policy_for(draft: MessageDraft, policy: Policy | None = None) -> Policy:
    """The policy a draft is decided under: a reply to the recipient's own inbound message (source
    `reply`: the STOP/HELP confirmation) is exempt from caps and quiet hours; pauses still hold it."""
    policy = policy or policy_current()
    return policy.uncapped() if draft.source == Source.REPLY else policy


def draft_row(draft: MessageDraft, decision: Decision, *, at: datetime) -> dict[str, Any]:
    """The Message row for a draft and its first decision."""
    return {
        "recipient_id": draft.recipient_id,
        "channel": draft.channel,
        "purpose": draft.purpose,
        "content": draft.content,
        "priority": draft.priority,
        "expires_at": decision.expires_at if draft.expires_at is None else draft.expires_at,
        "source": draft.source,
        "source_ref": draft.source_ref,
        "requested_channel": draft.requested_channel or draft.channel,
        "channel_reason": draft.channel_reason,
        "warnings": draft.warnings,
        "to_address": draft.to_address,
        "created_at": at,
        "updated_at": at,
        "status": decision.status,
        "rule": decision.rule,
        "reason": decision.reason,
        "decided_at": at,
        stamp_field(decision.status): at,
        "deliver_after": (
            decision.deliver_after if decision.status == MessageStatus.DEFERRED else draft.deliver_after
        ),
    }


def recipient_decide(
    *,
    policy: Policy,
    draft: MessageDraft,
    at: datetime,
    lock: bool,
    cursor,
    prepare: dict,
    unconfirmed: Snapshot | None = None,
) -> Decision:
    """Read what one decision needs (2 statements) and decide. With `lock`, takes the recipient's row lock.
    `unconfirmed`: the settings snapshot `policy` came from, still to be checked against the version that
    statement 1 reads (snapshot_unconfirmed); the policy is taken again when the settings moved.

    Plain SQL on the hot path: the ORM spent far longer compiling these than PostgreSQL running them.
    """
    recipient_id, channel, purpose = draft.recipient_id, draft.channel, draft.purpose
    # Statement 1 takes the lock (the mutex for this person's decisions); its snapshot predates the wait,
    # which is fine for what it reads: the time zone, the opt-out and the settings version are not what a
    # cap counts (the count is statement 2, below).
    held = draft.held if lock else None
    if held is not None:
        tz_name, opted_out = held.timezone, held.opted_out
    else:
        cursor.execute(_lock_sql(lock and is_postgres()), [channel, purpose, recipient_id], **prepare)
        row = cursor.fetchone()
        if row is None:
            raise Recipient.DoesNotExist(f"No recipient {recipient_id}.")
        tz_name, opted_out = row[0], bool(row[1])
        if unconfirmed is not None:
            # The settings version rode along with the lock (no statement of its own). If it moved since
            # this process loaded its snapshot, the policy is reloaded here, before any rule is chosen:
            # the count and the decision below use the settings as of statement 1, never older ones.
            snapshot = snapshot_confirmed(row[2] or 0)
            if snapshot is not unconfirmed:
                policy = policy_for(draft, policy_current(snapshot))
    rules = policy.rules_for(channel, purpose)
    uses: dict[int, RuleUse] = {}
    if rules and channel not in policy.pauses and not opted_out:
        # Statement 2, a fresh snapshot taken after the lock was granted: every applicable rule counted in
        # ONE aggregate over the window (index message_recipient_cleared) and the due queue ahead.
        sql, static = recipient_uses_sql(tuple(rules))
        params = {
            **static,
            **window_params(rules, at),
            "at": at,
            "priority": draft.priority,
            "recipient": recipient_id,
        }
        cursor.execute(sql, params, **prepare)
        counts = cursor.fetchone()
        uses = {
            r.id: RuleUse(counts[3 * n], as_datetime(counts[3 * n + 1]), counts[3 * n + 2])
            for n, r in enumerate(rules)
        }
    return decide(
        policy,
        tz=zone(tz_name),
        opted_out=opted_out,
        channel=channel,
        purpose=purpose,
        expires_at=draft.expires_at,
        deliver_after=draft.deliver_after,
        at=at,
        uses=uses,
        kth_oldest=partial(kth_oldest_cleared, recipient_id=recipient_id, at=at),
        shelf_life=draft.shelf_life,
        recipient_id=recipient_id,
    )


@lru_cache(maxsize=4)
def _lock_sql(for_update: bool) -> str:
    """Statement 1: the recipient's time zone, whether they opted out of this purpose on this channel, and
    the settings version (VERSION_SQL), locking their row when `for_update`."""
    return (
        f"SELECT r.timezone, EXISTS(SELECT 1 FROM {PREFERENCE_TABLE} p WHERE p.recipient_id = r.id"
        f" AND p.channel = %s AND p.purpose = %s AND NOT p.opted_in), {VERSION_SQL}"
        f" FROM {RECIPIENT_TABLE} r WHERE r.id = %s{' FOR UPDATE OF r' if for_update else ''}"
    )


def message_decide(*, draft: MessageDraft, at: datetime) -> Message:
    """Decide and record one message in one transaction holding the recipient's row lock.

    Status: accepted, deferred (deliver_after = the earliest time it could pass; None while its channel
    is paused), suppressed (preferences, pause) or expired (it could not pass before expires_at).
    """
    if draft.held is not None:
        # The pipeline's hot path already holds the lock (and read the settings version with it) in its
        # transaction: no savepoint inside it.
        with hot_cursor() as hot:
            decision = recipient_decide(
                policy=policy_for(draft), draft=draft, at=at, lock=True, cursor=hot[0], prepare=hot[1]
            )
            return _record(draft, decision, at, hot)
    # A direct caller gets its own transaction (a savepoint within theirs, so a failure here leaves theirs
    # usable). The settings version is read by the lock statement, not by a statement of its own.
    snapshot, unconfirmed = snapshot_unconfirmed()
    with transaction.atomic(), hot_cursor() as hot:
        decision = recipient_decide(
            policy=policy_for(draft, policy_current(snapshot)),
            draft=draft,
            at=at,
            lock=True,
            cursor=hot[0],
            prepare=hot[1],
            unconfirmed=snapshot if unconfirmed else None,
        )
        return _record(draft, decision, at, hot)


def _record(draft: MessageDraft, decision: Decision, at: datetime, hot: tuple) -> Message:
    """Statement 3: the Message and its first decision, in one INSERT (orchestrator.history)."""
    row, record = draft_row(draft, decision, at=at), decision.record(at=at)
    return messages_insert(rows=[row], decisions=[record], hot=hot)[0]


def governor_check(
    *,
    recipient: Recipient,
    channel: str,
    purpose: str,
    priority: int = 50,
    expires_at: datetime | None = None,
    deliver_after: datetime | None = None,
    at: datetime | None = None,
) -> Decision:
    """The dry run: the decision message_decide would make now, without locking or writing anything."""
    draft = MessageDraft(
        recipient_id=recipient.pk,
        channel=channel,
        purpose=purpose,
        content={},
        priority=priority,
        expires_at=expires_at,
        deliver_after=deliver_after,
    )
    with hot_cursor() as (cursor, prepare):
        return recipient_decide(
            policy=policy_current(),
            draft=draft,
            at=at or timezone.now(),
            lock=False,
            cursor=cursor,
            prepare=prepare,
        )
