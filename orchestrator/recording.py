"""Sends made by other systems, recorded into the one history (`POST messages/record/`, `history_import`).

A recorded send already happened: nothing decides it, nothing delivers it and nothing refuses it for its
content. It becomes a Message with source `external`, status `sent` (or `delivered`) and `accepted_at` =
`sent_at`, so every cap rule counts it from when it was sent; it is linted against its channel's job and
the violations are kept as warnings; it is idempotent on (source_system, external_id).

Every recorded message a decision running now could count is written, like every governed one, by a
transaction holding its recipient's row lock (a batch takes them in id order, as the governor's batches
do): the governor's count is exact only because every counted message is (see governor.counting). A send
older than the widest cap window (plus an hour) can be counted by no decision from now on, so a
historical backfill takes no lock for it (`lock_horizon`). The lock also serializes repeats of one
external id for one recipient; the unique constraint catches the rest and the batch is re-read.

This module sits with the send pipeline above channels_app (it reads the channel lint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils.dateparse import parse_datetime

from channels_app.lint import PolicyView, channel_policy_views, message_lint

from .db import ids_in, is_postgres
from .history import messages_insert, messages_insert_select
from .models import Channel, Message, MessageStatus, Purpose, Recipient, Source, validate_timezone
from .services import recipient_upsert

RECIPIENT_TABLE = Recipient._meta.db_table
MESSAGE_TABLE = Message._meta.db_table
UNIQUE_CONSTRAINT = "message_external_unique"
RECORDABLE_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED)
# Read once: Django's `Choices.values` builds a new list on every access, and the import asks per row.
CHANNELS, PURPOSES = tuple(Channel.values), tuple(Purpose.values)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LIMITS = {"recipient": 200, "source_system": 100, "external_id": 255}
CONTENT_MAX_CHARS = 20_000  # all the text of one recorded content, together
CONTENT_MAX_DEPTH = 3
DEFAULTS = {"CLOCK_SKEW": timedelta(seconds=60), "IMPORT_BATCH": 5000}


def conf(name: str):
    """A HISTORY setting (settings.ORCHESTRATOR["HISTORY"]), or its default."""
    return settings.ORCHESTRATOR.get("HISTORY", DEFAULTS).get(name, DEFAULTS[name])


class RecordInvalid(Exception):
    """A record the history will not take: `errors` maps each bad field to its reasons (nothing written)."""

    def __init__(self, errors: Mapping[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = dict(errors)


@dataclass(slots=True)
class RecordRequest:
    """One send made elsewhere, validated (`record_request_parse`)."""

    recipient: str  # the recipient's external id
    channel: str
    purpose: str
    sent_at: datetime
    source_system: str
    external_id: str
    content: dict[str, Any] = field(default_factory=dict)
    status: str = MessageStatus.SENT
    delivered_at: datetime | None = None
    create_recipient: bool = False
    timezone: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.source_system, self.external_id


# --- validation (one function for the API body and every imported row) ---------------------------------


def _unstorable(value: str) -> str | None:
    """Why PostgreSQL cannot store this text (a NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "NUL characters are not allowed."
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "Not valid Unicode text (a lone surrogate)."
    return None


def _text(data: Mapping[str, Any], name: str, errors: dict[str, list[str]]) -> str:
    value = data.get(name)
    if type(value) is str and 0 < len(value) <= LIMITS[name] and _unstorable(value) is None:
        stripped = value.strip()
        if stripped:
            return stripped
    if value is None or value == "":
        errors[name] = ["This field is required."]
        return ""
    if name == "external_id" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a numeric id in JSON is still an id
    if not isinstance(value, str):
        errors[name] = ["Expected a string."]
        return ""
    value = value.strip()
    if not value:
        errors[name] = ["This field may not be blank."]
    elif _unstorable(value):
        errors[name] = [_unstorable(value)]
    elif len(value) > LIMITS[name]:
        errors[name] = [f"At most {LIMITS[name]} characters (this one has {len(value)})."]
    return value


def _choice(data: Mapping[str, Any], name: str, allowed: tuple[str, ...], errors: dict) -> str:
    value = data.get(name)
    if value in allowed and isinstance(value, str):
        return value if type(value) is str else str(value)  # a TextChoices member: its plain value
    if value is None or value == "":
        errors[name] = ["This field is required."]
        return ""
    shown = repr(value) if isinstance(value, str | int | float | bool) else "this value"
    errors[name] = [f"Unknown {name} {shown[:60]}; expected one of {', '.join(allowed)}."]
    return ""


def _when(value: Any) -> datetime:
    """An aware datetime from ISO 8601 text (naive means UTC), or ValueError with a plain reason."""
    if type(value) is str and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)  # the common case, fast (Python 3.11 reads "Z")
        except ValueError:
            parsed = None
        if parsed is None and "\x00" not in value:
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
        if parsed is None:
            raise ValueError(f"{value[:40]!r} is not an ISO 8601 date-time (e.g. 2026-05-04T09:30:00Z).")
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValueError("Expected an ISO 8601 date-time string (e.g. 2026-05-04T09:30:00Z).")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _moment(data: Mapping[str, Any], name: str, now: datetime, latest: datetime, errors: dict):
    value = data.get(name)
    if value is None or value == "":
        return None
    try:
        when = _when(value)
    except ValueError as exc:
        errors[name] = [str(exc)]
        return None
    if EARLIEST <= when <= latest:
        return when
    if when < EARLIEST:
        errors[name] = [f"{when:%Y-%m-%d} is before 1970: not a send this history can hold."]
    else:
        errors[name] = [
            f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC is in the future (it is "
            f"{now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC): only sends already made can be recorded."
        ]
    return when


def _content_check(value: Any, depth: int = 0) -> int:
    """The characters of text in a content value; ValueError for NUL characters or too deep a value."""
    if isinstance(value, str):
        problem = _unstorable(value)
        if problem:
            raise ValueError(problem)
        return len(value)
    if value is None or isinstance(value, bool | int | float):
        return 1  # counted too: a list of a million numbers is not a summary
    if depth >= CONTENT_MAX_DEPTH:
        raise ValueError(f"Nested more than {CONTENT_MAX_DEPTH} levels deep.")
    if isinstance(value, dict):
        return sum(_content_check(k, depth + 1) + _content_check(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return sum(_content_check(v, depth + 1) for v in value)
    raise ValueError("Expected JSON values only.")


def _content(data: Mapping[str, Any], errors: dict) -> dict[str, Any]:
    value = data.get("content")
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = {"body": value}  # a one-line summary of what was sent
    if not isinstance(value, dict):
        errors["content"] = ["Expected an object such as {subject?, title?, body?, action_url?} or a string."]
        return {}
    size = 0
    for k, v in value.items():  # the common case: flat text, checked inline
        if type(v) is not str or _unstorable(v) or _unstorable(k):
            try:
                size = _content_check(value)
            except ValueError as exc:
                errors["content"] = [str(exc)]
                return {}
            break
        size += len(k) + len(v)
    if size > CONTENT_MAX_CHARS:
        errors["content"] = [f"At most {CONTENT_MAX_CHARS} characters of text (this one has {size})."]
        return {}
    return value


_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def _flag(data: Mapping[str, Any], name: str, errors: dict) -> bool:
    value = data.get(name, False)
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE  # CSV columns carry text
    errors[name] = ["Expected true or false."]
    return False


@lru_cache(maxsize=1024)
def _zone_problem(name: str) -> list[str] | None:
    """Why `name` is not a time zone, or None (cached: validate_timezone lists the zones on disk)."""
    try:
        validate_timezone(name)
    except ValidationError as exc:
        return exc.messages
    return None


def record_request_parse(data: Mapping[str, Any], *, now: datetime) -> RecordRequest:
    """Validate one record — `{recipient, channel, purpose, sent_at, source_system, external_id, content?,
    status?, delivered_at?, create_recipient?, timezone?}` — or raise RecordInvalid naming every bad field.

    Plain Python, no queries: the import validates a million rows with it. Whether the recipient exists
    is the recording's question (`messages_record_bulk`).
    """
    if not isinstance(data, Mapping):
        raise RecordInvalid({"non_field_errors": ["Expected a JSON object."]})
    errors: dict[str, list[str]] = {}
    recipient = _text(data, "recipient", errors)
    channel = _choice(data, "channel", CHANNELS, errors)
    purpose = _choice(data, "purpose", PURPOSES, errors)
    source_system = _text(data, "source_system", errors)
    external_id = _text(data, "external_id", errors)
    latest = now + conf("CLOCK_SKEW")
    sent_at = _moment(data, "sent_at", now, latest, errors)
    if sent_at is None and "sent_at" not in errors:
        errors["sent_at"] = ["This field is required."]
    content = _content(data, errors)
    delivered_at = _moment(data, "delivered_at", now, latest, errors)
    status = data.get("status")
    if status is None or status == "":
        status = MessageStatus.DELIVERED if delivered_at is not None else MessageStatus.SENT
    elif status not in RECORDABLE_STATUSES:
        allowed = " or ".join(RECORDABLE_STATUSES)
        errors["status"] = [f"A recorded send is {allowed}; not {str(status)[:40]!r}."]
    if delivered_at is not None and status == MessageStatus.SENT:
        errors["delivered_at"] = ["Only a delivered send has a delivered_at (send status: delivered)."]
    elif delivered_at is not None and sent_at is not None and delivered_at < sent_at:
        errors["delivered_at"] = ["delivered_at is before sent_at."]
    create = _flag(data, "create_recipient", errors)
    tz = data.get("timezone")
    if tz is not None and tz != "":
        problem = _zone_problem(tz) if isinstance(tz, str) else ["Expected an IANA time zone name."]
        if problem:
            errors["timezone"] = problem
    else:
        tz = None
    if errors:
        raise RecordInvalid(errors)
    return RecordRequest(
        recipient=recipient,
        channel=channel,
        purpose=purpose,
        sent_at=sent_at,
        source_system=source_system,
        external_id=external_id,
        content=content,
        status=status,
        delivered_at=(delivered_at or sent_at) if status == MessageStatus.DELIVERED else None,
        create_recipient=create,
        timezone=tz,
    )


# --- recording -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What became of one request: `recorded` (a new message), `duplicate` (recorded before: the first
    record's id) or `invalid` (`errors` by field; nothing written for it)."""

    outcome: str
    message_id: int | None = None
    message: Message | None = None
    errors: dict[str, list[str]] | None = None


def recorded_warnings(
    *, channel: str, purpose: str, content: Mapping[str, Any], policy: PolicyView | None
) -> list[dict[str, str]]:
    """The lint of a send made elsewhere, as warnings (code, detail, severity). Without content only its
    purpose can be judged (an SMS that carried a promotion breaks SMS's job whatever it said)."""
    violations = message_lint(channel=channel, purpose=purpose, content=content or {}, policy=policy)
    if not content:
        violations = [v for v in violations if v.code == f"{channel}_purpose"]
    return [{"code": v.code, "detail": v.reason, "severity": str(v.severity)} for v in violations]


def _text_list(values: Sequence[str]) -> str:
    """A list of strings as one JSON parameter (psycopg quotes a text[] element by element in Python;
    orjson writes the whole list in C)."""
    return orjson.dumps(list(values)).decode()


def _recipients_find(names: Sequence[str], *, lock: bool) -> dict[str, int]:
    """The ids of the recipients with these external ids. With `lock`, each row is locked (FOR UPDATE, in
    id order and in one statement, so two batches, or a batch and the governor, never deadlock): no
    decision for them runs until we commit. SQLite serializes writers itself (and is read in chunks)."""
    if not names:
        return {}
    found: dict[str, int] = {}
    with connection.cursor() as cursor:
        if is_postgres():
            cursor.execute(
                f"SELECT id, external_id FROM {RECIPIENT_TABLE} WHERE external_id ="
                " ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))) ORDER BY id"
                + (" FOR UPDATE" if lock else ""),
                [_text_list(names)],
            )
            return {name: pk for pk, name in cursor.fetchall()}
        for start in range(0, len(names), 500):
            where, params = ids_in("external_id", names[start : start + 500])
            cursor.execute(f"SELECT id, external_id FROM {RECIPIENT_TABLE} WHERE {where}", params)
            found.update((name, pk) for pk, name in cursor.fetchall())
    return found


def lock_horizon(*, at: datetime) -> datetime:
    """Sends at or before this time need no recipient lock: no cap rule's window reaches back to them
    from any decision made now (the widest window, and an hour for clocks and a policy edited meanwhile).
    A decision counts by `accepted_at` (= sent_at) after `at - window`, so a backfill of last month
    cannot change what a decision running now sees, while a send of this morning must be ordered
    with it."""
    from governor.policy import policy_current

    return at - policy_current().max_window - timedelta(hours=1)


def _recipients_lock(requests: Sequence[RecordRequest], *, at: datetime) -> dict[str, int]:
    """Resolve the requests' recipients, locking those with a send recent enough for a decision running
    now to count it (`lock_horizon`); the rest are only read (a historical backfill locks almost no one)."""
    horizon = lock_horizon(at=at)
    recent = sorted({r.recipient for r in requests if r.sent_at > horizon})
    ids = _recipients_find(recent, lock=True)
    ids.update(_recipients_find(sorted({r.recipient for r in requests} - set(recent)), lock=False))
    return ids


def _recorded_before(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(source_system, external_id) → the message already recorded for it."""
    if not keys:
        return {}
    with connection.cursor() as cursor:
        if is_postgres():
            # One probe of the unique index per key (LIMIT keeps the planner from hashing every
            # recorded send, which it would do while an import outruns the table's statistics).
            cursor.execute(
                "SELECT k.s, k.e, m.id FROM ROWS FROM (jsonb_array_elements_text(%s::jsonb),"
                " jsonb_array_elements_text(%s::jsonb)) AS k(s, e) CROSS JOIN LATERAL"
                f" (SELECT id FROM {MESSAGE_TABLE} WHERE source = %s AND source_system = k.s"
                " AND external_id = k.e LIMIT 1) m",
                [_text_list([s for s, _ in keys]), _text_list([e for _, e in keys]), str(Source.EXTERNAL)],
            )
            return {(s, e): pk for s, e, pk in cursor.fetchall()}
    by_system: dict[str, list[str]] = {}
    for s, e in keys:
        by_system.setdefault(s, []).append(e)
    found = {}
    for system, ids in by_system.items():
        for start in range(0, len(ids), 500):
            rows = Message.objects.filter(
                source=Source.EXTERNAL, source_system=system, external_id__in=ids[start : start + 500]
            ).values_list("external_id", "id")
            found.update(((system, e), pk) for e, pk in rows)
    return found


def _recipients_create(requests: Sequence[RecordRequest]) -> None:
    """Create the recipients these requests may create (like `POST events/` with create_recipient), in
    external-id order (two batches creating the same people never deadlock)."""
    wanted = {}
    for r in requests:
        wanted.setdefault(r.recipient, r.timezone)
    for name in sorted(wanted):
        recipient_upsert(external_id=name, timezone_name=wanted[name])


def _unknown_recipient(name: str) -> dict[str, list[str]]:
    return {
        "recipient": [
            f'No recipient with external_id {name!r}; create it first or send "create_recipient": true.'
        ]
    }


def _record(requests: Sequence[RecordRequest], *, at: datetime, dry_run: bool) -> list[RecordOutcome]:
    firsts: dict[tuple[str, str], int] = {}
    for n, r in enumerate(requests):
        firsts.setdefault(r.key, n)
    ids = _recipients_lock([requests[n] for n in firsts.values()], at=at)
    before = _recorded_before(list(firsts))

    outcomes: list[RecordOutcome | None] = [None] * len(requests)
    fresh: list[int] = []
    for key, n in firsts.items():
        if key in before:
            outcomes[n] = RecordOutcome("duplicate", before[key])
        else:
            fresh.append(n)
    creatable = [
        requests[n] for n in fresh if requests[n].recipient not in ids and requests[n].create_recipient
    ]
    if creatable and not dry_run:
        _recipients_create(creatable)
        ids.update(_recipients_lock(creatable, at=at))

    policies = channel_policy_views()
    # The lint runs once per distinct (channel, purpose, content) of the batch, and identical contents
    # share one object, which the insert's COPY turns into JSON once (a newsletter: once for all).
    # Rows in (recipient, time) order: the COPY then walks the history's recipient indexes in order.
    fresh.sort(key=lambda n: (ids.get(requests[n].recipient) or 0, requests[n].sent_at))
    lints: dict[tuple, tuple[list[dict[str, str]], dict]] = {}
    external = str(Source.EXTERNAL)
    rows, inserted = [], []
    for n in fresh:
        r = requests[n]
        rid = ids.get(r.recipient)
        if rid is None and not (dry_run and r.create_recipient):
            outcomes[n] = RecordOutcome("invalid", errors=_unknown_recipient(r.recipient))
            continue
        try:
            lint_key = (r.channel, r.purpose, tuple(sorted(r.content.items())))
            known = lints.get(lint_key)
        except TypeError:  # content with lists or objects in it: linted on its own
            lint_key, known = None, None
        if known is None:
            warnings = recorded_warnings(
                channel=r.channel, purpose=r.purpose, content=r.content, policy=policies.get(r.channel)
            )
            known = (warnings, r.content)
            if lint_key is not None:
                lints[lint_key] = known
        warnings, content = known
        rows.append(
            {
                "recipient_id": rid,
                "channel": r.channel,
                "requested_channel": r.channel,
                "purpose": r.purpose,
                "content": content,
                "status": r.status,
                "warnings": warnings,
                "source": external,
                "source_system": r.source_system,
                "external_id": r.external_id,
                "created_at": r.sent_at,
                "updated_at": at,
                "recorded_at": at,
                # Cleared when it was sent: every cap rule counts it from then (governor.counting).
                "accepted_at": r.sent_at,
                "sent_at": r.sent_at,
                "delivered_at": r.delivered_at,
            }
        )
        inserted.append(n)
    messages = [None] * len(rows) if dry_run else messages_insert(rows=rows, decisions=[None] * len(rows))
    for n, message in zip(inserted, messages, strict=True):
        outcomes[n] = RecordOutcome("recorded", message.pk if message else None, message)
    for n, r in enumerate(requests):
        if outcomes[n] is None:  # a repeat of a key earlier in this batch: the first one's record
            first = outcomes[firsts[r.key]]
            if first.outcome == "invalid":
                outcomes[n] = first
            else:
                outcomes[n] = RecordOutcome("duplicate", first.message_id)
    return outcomes  # type: ignore[return-value]


def messages_record_bulk(
    *, requests: Sequence[RecordRequest], at: datetime, dry_run: bool = False, durable: bool = True
) -> list[RecordOutcome]:
    """Record many sends made elsewhere, set-based, in one transaction: per request, its outcome.

    A handful of statements whatever the count: the recipients' row locks (which also resolve their
    external ids), the keys already recorded, the channel policies, one `messages_insert`. The lint runs
    once per distinct (channel, purpose, content). A key recorded before — or earlier in the batch — is a
    duplicate that returns the first record; an unknown recipient is invalid unless the request may
    create it. `dry_run` checks everything and writes nothing. `durable=False` (the import, which is safe
    to re-run) lets PostgreSQL commit without waiting for the disk.
    """
    if not requests:
        return []
    with transaction.atomic():
        if not durable and is_postgres():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        for attempt in range(3):
            try:
                with transaction.atomic():
                    outcomes = _record(requests, at=at, dry_run=dry_run)
                    if dry_run:
                        transaction.set_rollback(True)
                    return outcomes
            except IntegrityError as exc:
                # A concurrent record of one of these keys for another recipient (our locks did not
                # order us) committed first: read the batch again, it is now a duplicate.
                text = str(exc)
                ours = UNIQUE_CONSTRAINT in text or f"{MESSAGE_TABLE}.source_system" in text  # PG, SQLite
                if not ours or attempt == 2:
                    raise
    raise AssertionError("unreachable")


def message_record(*, request: RecordRequest, at: datetime) -> tuple[Message, bool]:
    """Record one send made elsewhere: (the message, True) when recorded now, (the first record, False)
    when this (source_system, external_id) was recorded before. Raises RecordInvalid (nothing written)."""
    (outcome,) = messages_record_bulk(requests=[request], at=at)
    if outcome.outcome == "invalid":
        raise RecordInvalid(outcome.errors or {})
    if outcome.message is not None:
        return outcome.message, True
    return Message.objects.get(pk=outcome.message_id), False


# --- staged recording: many rows set-based in SQL (history_import on PostgreSQL) ------------------------

STAGING_TABLE = "history_record_staging"
CONTENTS_TABLE = "history_record_contents"
# The staging table's columns, in the order of a staged line (COPY's text format).
STAGING_COLUMNS = (
    ("line", "integer"),
    ("recipient", "text"),
    ("channel", "text"),
    ("purpose", "text"),
    ("sent_at", "timestamptz"),
    ("delivered_at", "timestamptz"),
    ("status", "text"),
    ("source_system", "text"),
    ("external_id", "text"),
    ("content_ref", "integer"),
    ("create_recipient", "boolean"),
    ("timezone", "text"),
)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
EXTERNAL = str(Source.EXTERNAL)
LINT_MEMO_MAX = 4096  # distinct (channel, purpose, content) linted and kept: memory stays flat


def _copy_text(value: str) -> str:
    """A text value in COPY's text format (tabs, newlines and backslashes escaped; NULs were refused)."""
    if value.isprintable() and "\\" not in value:
        return value
    return value.translate(_COPY_ESCAPES)


@dataclass(slots=True)
class StagedRecords:
    """One batch of validated requests in the form `messages_record_staged` loads: a COPY text line per
    first occurrence of a (source_system, external_id) in the batch, the distinct contents those lines
    name (ref → (content JSON, lint warnings JSON)), and the repeats of a key (line, the first's line).
    Plain strings and numbers: it crosses from the reader process to the recorder cheaply."""

    lines: list[str] = field(default_factory=list)
    contents: dict[int, tuple[str, str]] = field(default_factory=dict)
    repeats: list[tuple[int, int]] = field(default_factory=list)


class RecordStager:
    """Turns validated requests (`record_request_parse`) into `StagedRecords`, batch by batch. The lint
    runs once per distinct (channel, purpose, content) — bulk sends share their content — and is kept
    across batches (up to LINT_MEMO_MAX contents, then forgotten: memory stays flat)."""

    def __init__(self, *, policies: Mapping[str, PolicyView]):
        self.policies = policies
        self._refs: dict[tuple[str, str, bytes], int] = {}
        self._contents: dict[int, tuple[str, str]] = {}
        self._next_ref = 0
        self.batch = StagedRecords()
        self._firsts: dict[tuple[str, str], int] = {}

    def take(self) -> StagedRecords:
        """The batch staged so far; the next one starts empty."""
        batch, self.batch, self._firsts = self.batch, StagedRecords(), {}
        return batch

    def _content_ref(self, channel: str, purpose: str, content: dict[str, Any]) -> int:
        dumped = orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)  # as rows_copy writes it
        key = (channel, purpose, dumped)
        ref = self._refs.get(key)
        if ref is None:
            if len(self._refs) >= LINT_MEMO_MAX:
                self._refs.clear()
                self._contents.clear()
            warnings = recorded_warnings(
                channel=channel, purpose=purpose, content=content, policy=self.policies.get(channel)
            )
            ref = self._refs[key] = self._next_ref
            self._next_ref += 1
            self._contents[ref] = (_copy_text(dumped.decode()), _copy_text(orjson.dumps(warnings).decode()))
        if ref not in self.batch.contents:
            self.batch.contents[ref] = self._contents[ref]
        return ref

    def add(self, request: RecordRequest, line: int) -> None:
        r = request
        first = self._firsts.get(r.key)
        if first is not None:  # recorded (or refused) with its first occurrence
            self.batch.repeats.append((line, first))
            return
        self._firsts[r.key] = line
        ref = self._content_ref(r.channel, r.purpose, r.content)
        self.batch.lines.append(
            "\t".join(
                (
                    str(line),
                    _copy_text(r.recipient),
                    r.channel,
                    r.purpose,
                    r.sent_at.isoformat(),
                    r.delivered_at.isoformat() if r.delivered_at is not None else "\\N",
                    r.status,
                    _copy_text(r.source_system),
                    _copy_text(r.external_id),
                    str(ref),
                    "t" if r.create_recipient else "f",
                    _copy_text(r.timezone) if r.timezone else "\\N",
                )
            )
        )

    def add_plain(self, data: Any, line: int, *, latest: datetime) -> bool:
        """Stage a row of the common shape — plain ASCII ids, a known channel and purpose, an ISO 8601
        send time, flat text content, nothing else set — without building a RecordRequest: what
        `record_request_parse` then `add` would stage, for a fifth of the work. False (nothing staged)
        for any other row, which goes through `record_request_parse` (that builds a bad row's report).
        `latest`: the latest send time taken (now plus the clock skew allowed)."""
        if type(data) is not dict:
            return False
        get = data.get
        recipient, system, external_id = get("recipient"), get("source_system"), get("external_id")
        channel, purpose, sent = get("channel"), get("purpose"), get("sent_at")
        create = get("create_recipient")
        if not (
            _plain(recipient, LIMITS["recipient"])
            and _plain(system, LIMITS["source_system"])
            and _plain(external_id, LIMITS["external_id"])
            and type(channel) is str
            and channel in CHANNELS
            and type(purpose) is str
            and purpose in PURPOSES
            and type(sent) is str
            and len(sent) <= 64
            and (create is None or type(create) is bool)
            and get("status") in _ABSENT
            and get("delivered_at") in _ABSENT
            and get("timezone") in _ABSENT
        ):
            return False
        try:
            when = datetime.fromisoformat(sent)
        except ValueError:
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if not EARLIEST <= when <= latest:
            return False
        content = get("content")
        if content is None or content == "":
            content = {}
        elif type(content) is dict:
            size = 0
            for k, v in content.items():
                if type(k) is not str or type(v) is not str or _unstorable(v) or _unstorable(k):
                    return False
                size += len(k) + len(v)
            if size > CONTENT_MAX_CHARS:
                return False
        else:
            return False
        key = (system, external_id)
        first = self._firsts.get(key)
        if first is not None:
            self.batch.repeats.append((line, first))
            return True
        self._firsts[key] = line
        ref = self._content_ref(channel, purpose, content)
        self.batch.lines.append(
            f"{line}\t{recipient}\t{channel}\t{purpose}\t{when.isoformat()}\t\\N\t{SENT}\t{system}"
            f"\t{external_id}\t{ref}\t{'t' if create else 'f'}\t\\N"
        )
        return True


_ABSENT = (None, "")
SENT = str(MessageStatus.SENT)


def _plain(value: Any, limit: int) -> bool:
    """Text the validator takes as it is (nothing to strip, nothing unstorable) and COPY as it is."""
    return (
        type(value) is str
        and 0 < len(value) <= limit
        and value.isascii()
        and value.isprintable()
        and "\\" not in value
        and value[0] != " "
        and value[-1] != " "
    )


@dataclass(slots=True)
class StagedOutcome:
    """What became of a staged batch: counts, and the refused rows (line, errors by field)."""

    recorded: int = 0
    duplicates: int = 0
    invalid: list[tuple[int, dict[str, list[str]]]] = field(default_factory=list)


def _staging_load(cursor, batch: StagedRecords) -> None:
    """The batch into two temporary tables (made once per connection, emptied at every commit)."""
    import psycopg

    columns = ", ".join(f"{name} {kind}" for name, kind in STAGING_COLUMNS)
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} ({columns}, recipient_id bigint)"
        " ON COMMIT DELETE ROWS"
    )
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {CONTENTS_TABLE} (ref integer, content jsonb, warnings jsonb)"
        " ON COMMIT DELETE ROWS"
    )
    # Start from empty tables: inside a caller's transaction (a test, a dry run's savepoint) no commit
    # has emptied them.
    cursor.execute(f"TRUNCATE {STAGING_TABLE}, {CONTENTS_TABLE}")
    with psycopg.Cursor(connection.connection) as raw:
        with raw.copy(f"COPY {CONTENTS_TABLE} (ref, content, warnings) FROM STDIN") as copy:
            copy.write("".join(f"{ref}\t{c}\t{w}\n" for ref, (c, w) in batch.contents.items()))
        names = ", ".join(name for name, _ in STAGING_COLUMNS)
        with raw.copy(f"COPY {STAGING_TABLE} ({names}) FROM STDIN") as copy:
            copy.write("\n".join(batch.lines) + "\n")


# Thousands of staged rows against millions of messages whose statistics an import outruns: every lookup
# is a correlated scalar subquery, which PostgreSQL runs as one index probe per row (an EXISTS or a join
# may be planned as a scan of the whole table).
_RECORDED_BEFORE = (
    f"(SELECT true FROM {MESSAGE_TABLE} m WHERE m.source = '{EXTERNAL}'"
    " AND m.source_system = s.source_system AND m.external_id = s.external_id LIMIT 1)"
)
_RECIPIENT_ID = f"(SELECT r.id FROM {RECIPIENT_TABLE} r WHERE r.external_id = s.recipient)"
# What a staged row becomes (the columns of `messages_record`'s rows): the Message attnames and the
# SQL of each over the staging table `s` and its contents `c` (%s: the recording's time).
_STAGED_MESSAGE = (
    ("recipient_id", "s.recipient_id"),
    ("channel", "s.channel"),
    ("requested_channel", "s.channel"),
    ("purpose", "s.purpose"),
    ("content", "c.content"),
    ("status", "s.status"),
    ("warnings", "c.warnings"),
    ("source", f"'{EXTERNAL}'"),
    ("source_system", "s.source_system"),
    ("external_id", "s.external_id"),
    ("created_at", "s.sent_at"),
    ("updated_at", "%s::timestamptz"),
    ("recorded_at", "%s::timestamptz"),
    # Cleared when it was sent: every cap rule counts it from then (governor.counting).
    ("accepted_at", "s.sent_at"),
    ("sent_at", "s.sent_at"),
    ("delivered_at", "s.delivered_at"),
)


def _recipients_lock_staged(cursor, *, at: datetime) -> None:
    """Lock the staged rows' recipients in one pass in id order: FOR UPDATE those with a send after
    `lock_horizon` (a decision running now counts it: it must wait for us), FOR KEY SHARE the others
    (what the foreign key's check takes at commit anyway: taken here, in order, two imports or an import
    and a batch of the governor never deadlock; the governor's FOR UPDATE still waits for it)."""
    recipients = RECIPIENT_TABLE
    cursor.execute(
        "SELECT count(CASE WHEN t.recent"
        f" THEN (SELECT 1 FROM {recipients} r WHERE r.id = t.id FOR UPDATE)"
        f" ELSE (SELECT 1 FROM {recipients} r WHERE r.id = t.id FOR KEY SHARE) END)"
        f" FROM (SELECT s.recipient_id AS id, bool_or(s.sent_at > %s) AS recent FROM {STAGING_TABLE} s"
        " WHERE s.recipient_id IS NOT NULL GROUP BY s.recipient_id ORDER BY s.recipient_id OFFSET 0) t",
        [lock_horizon(at=at)],
    )


def _staged_record(
    cursor, *, staged: int, at: datetime, dry_run: bool, outcome: StagedOutcome
) -> dict[int, dict]:
    """Decide and insert the staged rows (see `messages_record_staged`); the refused rows by line."""
    staging = STAGING_TABLE
    # Keys recorded before first (a re-run stops here). Two recordings of one key at once may both pass
    # this check: the unique constraint stops the second's insert and the batch is decided again.
    cursor.execute(f"DELETE FROM {staging} s WHERE {_RECORDED_BEFORE}")
    outcome.duplicates = cursor.rowcount
    if outcome.duplicates == staged:
        return {}
    cursor.execute(f"UPDATE {staging} s SET recipient_id = {_RECIPIENT_ID}")
    _recipients_lock_staged(cursor, at=at)
    if not dry_run:
        cursor.execute(
            f"SELECT DISTINCT ON (s.recipient) s.recipient, s.timezone FROM {staging} s"
            " WHERE s.create_recipient AND s.recipient_id IS NULL ORDER BY s.recipient, s.line"
        )
        created = cursor.fetchall()
        for name, tz in created:
            recipient_upsert(external_id=name, timezone_name=tz)
        if created:
            cursor.execute(
                f"UPDATE {staging} s SET recipient_id = {_RECIPIENT_ID}"
                " WHERE s.recipient_id IS NULL AND s.create_recipient"
            )
    cursor.execute(
        f"DELETE FROM {staging} s WHERE s.recipient_id IS NULL"
        + (" AND NOT s.create_recipient" if dry_run else "")
        + " RETURNING s.line, s.recipient"
    )
    refused = {line: _unknown_recipient(name) for line, name in cursor.fetchall()}
    if dry_run:
        cursor.execute(f"SELECT count(*) FROM {staging}")
        outcome.recorded = cursor.fetchone()[0]
    else:
        inserted = messages_insert_select(
            select=(
                f"SELECT {', '.join(sql for _, sql in _STAGED_MESSAGE)} FROM {staging} s"
                f" JOIN {CONTENTS_TABLE} c ON c.ref = s.content_ref ORDER BY s.recipient_id, s.sent_at"
            ),
            params=[at, at],
            columns=[name for name, _ in _STAGED_MESSAGE],
        )
        outcome.recorded = len(inserted)
    return refused


def messages_record_staged(*, batch: StagedRecords, at: datetime, dry_run: bool = False) -> StagedOutcome:
    """`messages_record_bulk` for a staged batch (PostgreSQL): the same outcomes, decided in SQL in one
    transaction — the rows COPYed into a staging table, keys recorded before skipped (duplicates), the
    other rows' recipients locked in one id-ordered pass (`_recipients_lock_staged`), recipients
    created where a row may create them (`recipient_upsert`, in external-id order), rows of unknown
    recipients refused, the rest inserted by one INSERT ... SELECT (`history.messages_insert_select`).
    A key that a concurrent recording committed meanwhile breaks the unique constraint: the batch is
    decided again (it is now a duplicate). Commits without waiting for the disk (the import is safe to
    re-run). `dry_run` decides everything and writes nothing."""
    outcome = StagedOutcome()
    if not batch.lines:
        return outcome
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        _staging_load(cursor, batch)
        for attempt in range(3):
            try:
                with transaction.atomic():
                    refused = _staged_record(
                        cursor, staged=len(batch.lines), at=at, dry_run=dry_run, outcome=outcome
                    )
                break
            except IntegrityError as exc:
                if UNIQUE_CONSTRAINT not in str(exc) or attempt == 2:
                    raise
        if dry_run:
            transaction.set_rollback(True)
    for line, first in batch.repeats:
        if first in refused:
            refused[line] = refused[first]
        else:
            outcome.duplicates += 1
    outcome.invalid = sorted(refused.items())
    return outcome
