"""Set-based decisions for many recipients at once: journey batches, campaigns, the re-drive, and the dry
runs of the next-best-channel choice.

Same decisions as governor.decision for each message, in input order per recipient. A batch locks its
recipients' rows in id order (two batches, or a batch and single decisions, never deadlock), then counts
their windows with separate statements — fresh snapshots that see everything committed by whoever held a
lock before (governor.counting explains why that makes the count exact).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from django.db import transaction

from orchestrator.db import as_datetime, hot_cursor, ids_in, ids_in_named, is_postgres
from orchestrator.history import messages_insert
from orchestrator.models import Message

from .counting import kth_oldest_cleared, recipients_uses_sql, window_params
from .decision import PREFERENCE_TABLE, RECIPIENT_TABLE, MessageDraft, draft_row, policy_for, zone
from .policy import Decision, Policy, RuleUse, decide, policy_current

_NO_USE = RuleUse()
CHUNK = 5000  # recipients per set-based query (keeps parameter lists bounded)
MESSAGE_TABLE = Message._meta.db_table


@dataclass
class _Waiting:
    """A due deferred message (a candidate for 'ahead in the queue')."""

    pk: int
    channel: str
    purpose: str
    priority: int
    created_at: datetime

    def ahead_of(self, *, priority: int, created_at: datetime, pk: int | None) -> bool:
        if self.priority != priority:
            return self.priority > priority
        if pk is None:
            return self.created_at <= created_at
        return (self.created_at, self.pk) < (created_at, pk)


class Batch:
    """What the decisions for many recipients need, loaded with a few set-based queries per CHUNK
    recipients (locks in id order, opt-outs, one grouped window count, the due queue); decisions are
    then made in memory and the batch keeps count of what it clears."""

    def __init__(self, *, policy: Policy, at: datetime, recipient_ids: Iterable[int], lock: bool):
        self.policy, self.at = policy, at
        self.tz: dict[int, str] = {}
        self.erased: set[int] = set()  # recipients erased before their lock was granted (see _load)
        self.opted_out: set[tuple[int, str, str]] = set()
        self.uses: dict[tuple[int, int], RuleUse] = {}
        self.taken: dict[tuple[int, int], int] = defaultdict(int)
        self.waiting: dict[int, list[_Waiting]] = defaultdict(list)
        self.done: set[int] = set()
        self.memo: dict[tuple, Decision] = {}  # decisions by their inputs (see _memo_key)
        ids = sorted(set(recipient_ids))
        for start in range(0, len(ids), CHUNK):
            self._load(ids[start : start + CHUNK], lock=lock)

    def _load(self, ids: list[int], *, lock: bool) -> None:
        at, rules = self.at, self.policy.rules
        # A psycopg cursor on PostgreSQL: the window's timestamps come back in the binary format, which
        # psycopg reads in C (Django's text loader for them is Python: 3 us each, 75k per 100k drafts).
        with hot_cursor() as (cursor, prepare):
            kwargs = {**prepare, "binary": True} if prepare else {}
            where, params = ids_in("id", ids)
            # Statement 1: the row locks, in id order.
            for_update = " FOR UPDATE" if lock and is_postgres() else ""
            # With the lock, whether each was erased: the sender read its reachability before (outside this
            # transaction), and an erasure that committed since must not be followed by a send it missed.
            cursor.execute(
                f"SELECT id, timezone, erased_at IS NOT NULL FROM {RECIPIENT_TABLE}"
                f" WHERE {where} ORDER BY id{for_update}",
                params,
                **kwargs,
            )
            for pk, tz, erased in cursor.fetchall():
                self.tz[pk] = tz
                if erased:
                    self.erased.add(pk)
            where, params = ids_in("recipient_id", ids)
            cursor.execute(
                f"SELECT recipient_id, channel, purpose FROM {PREFERENCE_TABLE}"
                f" WHERE {where} AND NOT opted_in",
                params,
                **kwargs,
            )
            self.opted_out.update(map(tuple, cursor.fetchall()))
            if rules:
                # Every rule's window for every recipient of the chunk in ONE grouped statement, started
                # after the locks were granted (its snapshot sees what the previous lock holders wrote).
                named_where, id_params = ids_in_named("recipient_id", ids)
                sql, static = recipients_uses_sql(tuple(rules), named_where)
                cursor.execute(sql, {**static, **id_params, **window_params(rules, at)}, **kwargs)
                uses = self.uses
                for row in cursor.fetchall():
                    for n, r in enumerate(rules):
                        if row[1 + 2 * n]:
                            uses[(row[0], r.id)] = RuleUse(row[1 + 2 * n], as_datetime(row[2 + 2 * n]))
            cursor.execute(
                f"SELECT id, recipient_id, channel, purpose, priority, created_at FROM {MESSAGE_TABLE}"
                f" WHERE {where} AND status = 'deferred' AND deliver_after <= %s"
                " AND (expires_at IS NULL OR expires_at > %s)",
                [*params, at, at],
                **kwargs,
            )
            for pk, rid, channel, purpose, priority, created_at in cursor.fetchall():
                self.waiting[rid].append(_Waiting(pk, channel, purpose, priority, as_datetime(created_at)))

    def decide(
        self,
        *,
        recipient_id: int,
        channel: str,
        purpose: str,
        priority: int,
        expires_at: datetime | None,
        deliver_after: datetime | None = None,
        created_at: datetime | None = None,
        pk: int | None = None,
        shelf_life=None,
        preview: bool = False,
        policy: Policy | None = None,
    ) -> Decision:
        """Decide one message of the batch (under `policy`, the batch's unless given); unless `preview`,
        an accepted one takes its slot."""
        at = self.at
        policy = policy or self.policy
        created_at = created_at or at
        queue = self.waiting.get(recipient_id)
        waiting = (
            [
                w
                for w in queue
                if w.pk != pk
                and w.pk not in self.done
                and w.ahead_of(priority=priority, created_at=created_at, pk=pk)
            ]
            if queue
            else ()
        )
        rules = policy.rules_for(channel, purpose)
        counts = []  # per rule: (count, oldest, ahead, taken)
        for r in rules:
            base = self.uses.get((recipient_id, r.id)) or _NO_USE
            ahead = sum(1 for w in waiting if r.applies_to(w.channel, w.purpose)) if waiting else 0
            counts.append((base.count, base.oldest, ahead, self.taken.get((recipient_id, r.id), 0)))
        tz_name = self.tz.get(recipient_id, "UTC")
        opted_out = (recipient_id, channel, purpose) in self.opted_out
        key = self._memo_key(
            policy, rules, counts, tz_name, opted_out, channel, purpose, expires_at, deliver_after, shelf_life
        )
        if key is not None and not (
            policy.holdout is not None and policy.holdout.holds(recipient_id=recipient_id, purpose=purpose)
        ):
            decision = self.memo.get(key)
        else:
            key = decision = None
        if decision is None:
            uses = {r.id: RuleUse(*c) for r, c in zip(rules, counts, strict=True)}
            decision = decide(
                policy,
                tz=zone(tz_name),
                opted_out=opted_out,
                channel=channel,
                purpose=purpose,
                expires_at=expires_at,
                deliver_after=deliver_after,
                at=at,
                uses=uses,
                kth_oldest=partial(kth_oldest_cleared, recipient_id=recipient_id, at=at),
                shelf_life=shelf_life,
                recipient_id=recipient_id,
            )
            if key is not None:
                self.memo[key] = decision
        if preview:
            return decision
        if pk is not None:
            self.done.add(pk)
        if decision.status == "accepted":
            for r in self.policy.rules_for(channel, purpose):
                self.taken[(recipient_id, r.id)] += 1
        return decision

    def _memo_key(
        self, policy, rules, counts, tz_name, opted_out, channel, purpose, expires_at, deliver_after, shelf
    ) -> tuple | None:
        """What the decision depends on besides the recipient's id, or None when it depends on more.

        `policy.decide` reads the recipient only through its time zone, opt-out and rule uses (and the
        global holdout, checked by the caller); a rule's oldest cleared time matters only when that rule
        is full by exactly one, and a rule full by more asks the history (`kth_oldest`): no memo then.
        Recipients with the same inputs (most of a campaign: one zone, a few counts) share one decision.
        """
        if policy is not self.policy:
            return None
        key = [tz_name, opted_out, channel, purpose, expires_at, deliver_after, shelf]
        for r, (count, oldest, ahead, taken) in zip(rules, counts, strict=True):
            k = count + taken + ahead - r.limit + 1
            if 1 <= k <= count and (k > 1 or oldest is None):
                return None
            key.append((count, taken, ahead, oldest if 1 == k <= count else None))
        return tuple(key)

    def decide_draft(self, draft: MessageDraft, *, preview: bool = False) -> Decision:
        return self.decide(
            recipient_id=draft.recipient_id,
            channel=draft.channel,
            purpose=draft.purpose,
            priority=draft.priority,
            expires_at=draft.expires_at,
            deliver_after=draft.deliver_after,
            shelf_life=draft.shelf_life,
            preview=preview,
            policy=policy_for(draft, self.policy),
        )


def messages_decide_bulk(*, drafts: Sequence[MessageDraft], at: datetime) -> list[Message | None]:
    """Decide and record many messages at once, set-based (campaigns, journey batches).

    Locks the recipients' rows in id order within one transaction. Returns the Messages in the order of
    `drafts`; None for a draft whose recipient was erased before its lock was granted (nothing recorded:
    the erasure scrubbed the history, and a message written after it would carry the address it removed).
    """
    if not drafts:
        return []
    policy = policy_current()
    with transaction.atomic():
        batch = Batch(policy=policy, at=at, recipient_ids=(d.recipient_id for d in drafts), lock=True)
        erased = batch.erased
        kept = [d for d in drafts if d.recipient_id not in erased] if erased else drafts
        decisions = [batch.decide_draft(d) for d in kept]
        records: dict[int, dict] = {}  # recipients sharing a decision share its record (one dict)
        for decision in decisions:
            if id(decision) not in records:
                records[id(decision)] = decision.record(at=at)
        messages = messages_insert(
            rows=[draft_row(d, decision, at=at) for d, decision in zip(kept, decisions, strict=True)],
            decisions=[records[id(decision)] for decision in decisions],
        )
    if not erased:
        return messages
    recorded = iter(messages)
    return [None if d.recipient_id in erased else next(recorded) for d in drafts]


@dataclass(frozen=True)
class Preview:
    decisions: list[Decision]
    timezones: dict[int, str]  # recipient id → IANA zone, to say the times in their wall clock


def decisions_preview_bulk(
    *, drafts: Sequence[MessageDraft], at: datetime, policy: Policy | None = None
) -> Preview:
    """What the governor would decide for each draft now, each on its own (no lock, nothing taken or
    written): the next-best-channel choice asks this of every candidate channel."""
    if not drafts:
        return Preview([], {})
    policy = policy or policy_current()
    batch = Batch(policy=policy, at=at, recipient_ids=(d.recipient_id for d in drafts), lock=False)
    return Preview([batch.decide_draft(d, preview=True) for d in drafts], batch.tz)
