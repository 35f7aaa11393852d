"""Campaigns: a one-off message to a segment, sent through the one pipeline in set-based batches.

Lifecycle: draft → proposed → approved → scheduled → sending → done (reject: back to draft; cancel from
any state before done). Approving schedules it: now, at a time, or at a local time in each recipient's
own zone. When it starts, its audience is written down in ONE INSERT ... SELECT (the segment's query),
each member with the moment it is due; workers then claim due members in batches (members by due time
then recipient id, FOR UPDATE SKIP LOCKED, so several workers share one campaign batch by batch), send
each batch with `messages_send_bulk` (render, lint, shelf life, governor, record, enqueue) and record the
outcome in the same transaction, so every member is decided exactly once and a cancel stops whatever is
undecided.
"""

from __future__ import annotations

import json
import logging
import time as time_module
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, DateTimeField, Min, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime, parse_time

from channels_app.lint import Severity, message_lint
from channels_app.models import MessageTemplate
from orchestrator.authority import authorize
from orchestrator.db import as_datetime, hot_cursor
from orchestrator.models import (
    AUTO_CHANNEL,
    Channel,
    Message,
    MessageStatus,
    Purpose,
    Recipient,
    Segment,
    Source,
)
from orchestrator.pipeline import (
    SendRefused,
    SendRequest,
    message_send,
    messages_send_bulk,
    send_requests_for,
)
from orchestrator.selectors import segment_recipients

from .models import (
    CAMPAIGN_FINAL,
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    MemberState,
    ScheduleKind,
)
from .services import proposal_review_record

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
THROTTLE_WINDOW = timedelta(minutes=1)
MAX_THROTTLE = 1_000_000
CONTENT_FIELDS = ("subject", "title", "body", "action_url")


def _setting(name: str, default):
    return getattr(settings, "ORCHESTRATOR", {}).get(name, default)


class CampaignInvalid(Exception):
    """Bad campaign input: `errors` maps a field to messages (the API answers 400); nothing written."""

    def __init__(self, errors: Mapping[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = dict(errors)


class CampaignConflict(Exception):
    """The campaign's state does not allow this (the API answers 409)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


# action → (statuses it may start from, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "propose": (frozenset({CampaignStatus.DRAFT}), CampaignStatus.PROPOSED),
    "approve": (frozenset({CampaignStatus.PROPOSED}), CampaignStatus.APPROVED),
    "reject": (frozenset({CampaignStatus.PROPOSED}), CampaignStatus.DRAFT),
    "cancel": (
        frozenset(
            {
                CampaignStatus.DRAFT,
                CampaignStatus.PROPOSED,
                CampaignStatus.APPROVED,
                CampaignStatus.SCHEDULED,
                CampaignStatus.SENDING,
            }
        ),
        CampaignStatus.CANCELLED,
    ),
}
ACTIONS = (*TRANSITIONS, "test")


# The permission each lifecycle action needs (orchestrator.authority; journeys/rules.py registers the
# campaign as a proposal: the role, the channels, and nobody approving their own proposal).
ACTION_PERMS = {
    "propose": "journeys.propose_campaign",
    "approve": "journeys.approve_campaign",
    "reject": "journeys.reject_campaign",
    "cancel": "journeys.cancel_campaign",
    "test": "journeys.change_campaign",  # a test send is part of writing the draft
}


def campaign_action_authorize(*, user: Any, action: str, campaign: Campaign) -> None:
    """The role check per action, like journeys': channel owners write and propose campaigns on their
    channels, the messaging team approves, rejects and cancels. Raises authority.Denied (403)."""
    authorize(user, ACTION_PERMS.get(action, f"journeys.{action}_campaign"), campaign)


# ---- input --------------------------------------------------------------------------------------------


def _moment(value: Any, field: str, errors: dict) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    try:
        parsed = parse_datetime(value) if isinstance(value, str) and len(value) <= 40 else None
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None:
        errors.setdefault(field, []).append("Expected an ISO 8601 date-time, e.g. 2026-03-02T10:00:00Z.")
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def _schedule_parse(schedule: Any, errors: dict) -> dict[str, Any]:
    """`{}` or null (now) | {at} | {local_time: "10:00", date?} → the model's schedule fields."""
    if schedule in (None, {}):
        return {"schedule_kind": ScheduleKind.NOW, "send_at": None, "local_time": None, "local_date": None}
    if not isinstance(schedule, Mapping):
        errors["schedule"] = ['Expected {} (now), {"at": ...} or {"local_time": "10:00", "date"?: ...}.']
        return {}
    unknown = set(schedule) - {"at", "local_time", "date"}
    if unknown:
        errors["schedule"] = [
            f"Unknown key {sorted(map(str, unknown))[0][:40]!r}; expected at, local_time, date."
        ]
        return {}
    if "local_time" in schedule:
        if schedule.get("at") is not None:
            errors["schedule"] = ["Give either at or local_time, not both."]
            return {}
        raw = schedule["local_time"]
        try:
            local = parse_time(raw) if isinstance(raw, str) and len(raw) <= 15 else None
        except ValueError:
            local = None
        if local is None:
            errors["schedule.local_time"] = ['Expected a time of day, e.g. "10:00".']
        day = None
        if schedule.get("date") is not None:
            raw_date = schedule["date"]
            try:
                day = parse_date(raw_date) if isinstance(raw_date, str) and len(raw_date) <= 10 else None
            except ValueError:
                day = None
            if day is None or not date(2000, 1, 1) <= day <= date(9998, 12, 31):
                errors["schedule.date"] = ["Expected an ISO date such as 2026-03-02."]
        return {
            "schedule_kind": ScheduleKind.LOCAL_TIME,
            "send_at": None,
            "local_time": local,
            "local_date": day,
        }
    if "date" in schedule:
        errors["schedule.date"] = ["date goes with local_time."]
        return {}
    at = _moment(schedule.get("at"), "schedule.at", errors)
    if at is not None and not datetime(2000, 1, 1, tzinfo=UTC) <= at <= datetime(9998, 12, 31, tzinfo=UTC):
        errors["schedule.at"] = ["That date is out of range."]
    kind = ScheduleKind.AT if at is not None else ScheduleKind.NOW
    return {"schedule_kind": kind, "send_at": at, "local_time": None, "local_date": None}


def _campaign_fields(data: Mapping[str, Any], *, now: datetime, partial: Campaign | None = None) -> dict:
    """Validate campaign input (whole, or a draft's changes) into model fields; CampaignInvalid lists
    every problem by field."""
    errors: dict[str, list[str]] = {}
    known = {
        "name",
        "segment",
        "channel",
        "purpose",
        "template",
        "content",
        "data",
        "priority",
        "expires_at",
        "schedule",
        "throttle_per_minute",
    }
    for key in data:
        if key not in known:
            errors[str(key)[:40]] = ["Unknown field."]
    current = _campaign_as_input(partial) if partial else {}
    merged = {**current, **data}
    fields: dict[str, Any] = {}

    name = merged.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or "\x00" in name:
        errors["name"] = ["name is required: at most 200 characters."]
    else:
        fields["name"] = name.strip()

    segment_ref = merged.get("segment")
    segment = None
    if isinstance(segment_ref, Segment):
        segment = segment_ref
    elif isinstance(segment_ref, int) and not isinstance(segment_ref, bool) and 0 < segment_ref < 2**62:
        segment = Segment.objects.filter(pk=segment_ref).first()
    elif isinstance(segment_ref, str) and 0 < len(segment_ref) <= 200 and "\x00" not in segment_ref:
        segment = Segment.objects.filter(name=segment_ref).first()
        if segment is None and segment_ref.isdigit() and len(segment_ref) < 18:
            segment = Segment.objects.filter(pk=int(segment_ref)).first()
    if segment is None:
        errors["segment"] = ["Expected the id (or name) of an existing segment."]
    else:
        fields["segment"] = segment

    channel = merged.get("channel")
    if channel not in (*Channel.values, AUTO_CHANNEL):
        errors["channel"] = [f"channel is one of {', '.join(Channel.values)} or auto."]
    else:
        fields["channel"] = channel
    purpose = merged.get("purpose")
    if purpose not in Purpose.values:
        errors["purpose"] = [f"purpose is one of {', '.join(Purpose.values)}."]
    else:
        fields["purpose"] = purpose

    template_ref, content = merged.get("template"), merged.get("content")
    if template_ref in ("", None) and content in (None, {}, ""):
        errors["content"] = ["Give content {subject?, title?, body, action_url?} or a template key."]
    elif template_ref not in ("", None) and content not in (None, {}, ""):
        errors["template"] = ["Give a template or content, not both."]
    elif template_ref not in ("", None):
        template = (
            MessageTemplate.objects.filter(key=template_ref).first()
            if isinstance(template_ref, str) and len(template_ref) <= 100
            else None
        )
        if template is None:
            errors["template"] = ["No template with this key."]
        elif template.channel != AUTO_CHANNEL and channel not in (template.channel, AUTO_CHANNEL):
            errors["template"] = [f"{template.key} is written for {template.channel}, not {channel}."]
        else:
            fields["template"], fields["content"] = template, {}
    else:
        if not isinstance(content, Mapping) or any(k not in CONTENT_FIELDS for k in content):
            errors["content"] = [f"content is an object with {', '.join(CONTENT_FIELDS)}."]
        elif not all(isinstance(v, str) and len(v) <= 20_000 and "\x00" not in v for v in content.values()):
            errors["content"] = ["Each content field is text of at most 20000 characters."]
        elif "channel" in fields and "purpose" in fields:
            blocking = [
                v
                for v in message_lint(channel=channel, purpose=purpose, content=content)
                if v.severity == Severity.BLOCK
            ]
            if blocking:
                errors["content"] = [f"{v.code}: {v.reason}" for v in blocking]
            else:
                fields["template"], fields["content"] = None, dict(content)

    data_vars = merged.get("data", {})
    if data_vars is None:
        data_vars = {}
    if not isinstance(data_vars, Mapping):
        errors["data"] = ["data is an object of template variables."]
    elif len(json.dumps(data_vars, default=str)) > 50_000 or "\\u0000" in json.dumps(data_vars, default=str):
        errors["data"] = ["data is too large (50 kB at most) or contains NUL characters."]
    else:
        fields["data"] = dict(data_vars)

    priority = merged.get("priority", 50)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100:
        errors["priority"] = ["priority is a whole number from 0 to 100."]
    else:
        fields["priority"] = priority

    expires_at = _moment(merged.get("expires_at"), "expires_at", errors)
    if expires_at is not None and expires_at <= now:
        errors["expires_at"] = ["expires_at is already in the past."]
    elif "expires_at" not in errors:
        fields["expires_at"] = expires_at

    throttle = merged.get("throttle_per_minute")
    if throttle is not None and (
        not isinstance(throttle, int) or isinstance(throttle, bool) or not 1 <= throttle <= MAX_THROTTLE
    ):
        errors["throttle_per_minute"] = [f"A whole number from 1 to {MAX_THROTTLE}, or null."]
    else:
        fields["throttle_per_minute"] = throttle

    fields.update(_schedule_parse(merged.get("schedule"), errors))
    if fields.get("expires_at") and fields.get("send_at") and fields["expires_at"] <= fields["send_at"]:
        errors["expires_at"] = ["expires_at is before the campaign starts."]
    if errors:
        raise CampaignInvalid(errors)
    return fields


def campaign_schedule_dict(campaign: Campaign) -> dict[str, Any]:
    if campaign.schedule_kind == ScheduleKind.LOCAL_TIME:
        out: dict[str, Any] = {"local_time": campaign.local_time.strftime("%H:%M")}
        if campaign.local_time.second:
            out["local_time"] = campaign.local_time.strftime("%H:%M:%S")
        if campaign.local_date:
            out["date"] = campaign.local_date.isoformat()
        return out
    if campaign.schedule_kind == ScheduleKind.AT:
        return {"at": campaign.send_at.isoformat().replace("+00:00", "Z")}
    return {}


def _campaign_as_input(campaign: Campaign) -> dict[str, Any]:
    return {
        "name": campaign.name,
        "segment": campaign.segment,
        "channel": campaign.channel,
        "purpose": campaign.purpose,
        "template": campaign.template.key if campaign.template_id else None,
        "content": campaign.content or None,
        "data": campaign.data,
        "priority": campaign.priority,
        "expires_at": campaign.expires_at,
        "schedule": campaign_schedule_dict(campaign),
        "throttle_per_minute": campaign.throttle_per_minute,
    }


def campaign_create(*, data: Mapping[str, Any], now: datetime, user: Any = None) -> Campaign:
    """Create a draft campaign; CampaignInvalid (by field) writes nothing."""
    if not isinstance(data, Mapping):
        raise CampaignInvalid({"non_field_errors": ["Expected a JSON object."]})
    fields = _campaign_fields(data, now=now)
    draft = Campaign(**fields)
    authorize(user, "journeys.add_campaign", draft)
    creator = user if getattr(user, "pk", None) else None
    return Campaign.objects.create(**fields, created_by=creator, created_at=now)


def campaign_update(
    *, campaign: Campaign, changes: Mapping[str, Any], now: datetime, user: Any = None
) -> Campaign:
    """Edit a draft (a proposed campaign goes back to draft with `reject` first). The editor must be
    allowed on the campaign as it is and as it would become (its channel)."""
    if not isinstance(changes, Mapping):
        raise CampaignInvalid({"non_field_errors": ["Expected a JSON object."]})
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        authorize(user, "journeys.change_campaign", campaign)
        if campaign.status != CampaignStatus.DRAFT:
            raise CampaignConflict(
                "not_draft", f"{campaign.name} is {campaign.status}: only a draft can be edited."
            )
        fields = _campaign_fields(changes, now=now, partial=campaign)
        for key, value in fields.items():
            setattr(campaign, key, value)
        authorize(user, "journeys.change_campaign", campaign)  # and as it would become
        campaign.save()
    return campaign


# ---- lifecycle ------------------------------------------------------------------------------------------


def _start_at(campaign: Campaign, now: datetime) -> datetime:
    if campaign.schedule_kind == ScheduleKind.AT and campaign.send_at and campaign.send_at > now:
        return campaign.send_at
    return now


def campaign_transition(
    *, campaign: Campaign, action: str, now: datetime, user: Any = None, comment: str = ""
) -> Campaign:
    """Move a campaign along its lifecycle (propose, approve, reject, cancel); CampaignConflict (409)
    for a move its state does not allow. Approving schedules it; cancelling stops what is undecided."""
    if action not in TRANSITIONS:
        raise CampaignConflict("unknown_action", f"Unknown action {action!r}.")
    sources, target = TRANSITIONS[action]
    with transaction.atomic():
        # A cancel lands between batches, never inside one: its UPDATE of the pending members below waits
        # for the members a batch holds right now, then skips them (decided by then).
        campaign = (
            Campaign.objects.select_for_update(of=("self",)).select_related("template").get(pk=campaign.pk)
        )
        campaign_action_authorize(user=user, action=action, campaign=campaign)
        if campaign.status not in sources:
            allowed = ", ".join(sorted(sources))
            raise CampaignConflict(
                "illegal_transition",
                f"Cannot {action} {campaign.name}: it is {campaign.status} (allowed from {allowed}).",
            )
        username = getattr(user, "get_username", lambda: "")() if user is not None else ""
        proposal_review_record(campaign, action=action, user=user, now=now, comment=comment)
        if action == "approve":
            if campaign.template_id:
                campaign.template_revision = campaign.template.revision
            if campaign.expires_at and campaign.expires_at <= _start_at(campaign, now):
                raise CampaignConflict("expired", f"{campaign.name} expires before it would start.")
            campaign.approved_at = now
            if campaign.started_at is not None:
                # Re-approved after its template changed: the undecided members go on where they were.
                target = CampaignStatus.SENDING
                campaign.next_run_at = now
            else:
                # Approved is where scheduling starts: the due work writes the audience at its start.
                target = CampaignStatus.SCHEDULED
                campaign.next_run_at = _start_at(campaign, now)
            campaign.note = ""
            transaction.on_commit(_kick, robust=True)
        elif action == "cancel":
            campaign.cancelled_at, campaign.next_run_at = now, None
            undecided = CampaignRecipient.objects.filter(campaign=campaign, state=MemberState.PENDING).update(
                state=MemberState.CANCELLED, decided_at=now, detail="The campaign was cancelled."
            )
            campaign.note = f"Cancelled by {username or 'an operator'}: {undecided} undecided not sent."
            _held_cancel(campaign, now)
        campaign.status = target
        campaign.save()
    return campaign


def _held_cancel(campaign: Campaign, now: datetime) -> None:
    """Messages of the campaign still held (deferred) are suppressed too, after commit, in chunks (the
    journeys' task: it locks messages outside the caller's transaction)."""
    from .services import _enqueue

    ids = list(
        CampaignRecipient.objects.filter(
            campaign=campaign, state=MemberState.DECIDED, message__status=MessageStatus.DEFERRED
        ).values_list("message_id", flat=True)
    )
    for start in range(0, len(ids), 1000):
        _enqueue(
            "journeys.tasks.messages_cancel_task",
            ids[start : start + 1000],
            "Cancelled: the campaign was cancelled.",
        )


def _kick(tasks: int | None = None) -> None:
    """Start now rather than at the next minute's due-work pass: CAMPAIGN_TASKS tasks (by default), which
    share the campaign batch by batch on as many workers."""
    from django_q.tasks import async_task

    for _ in range(max(1, tasks or int(_setting("CAMPAIGN_TASKS", 2)))):
        async_task("journeys.tasks.campaigns_advance_task")


# ---- the audience ----------------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def local_due(*, zone: str, local_time: time, local_date: date | None, not_before: datetime) -> datetime:
    """The moment it is `local_time` in `zone` on `local_date` (default: that zone's day at `not_before`);
    if that moment already passed at `not_before`, the same local time the next day. DST-correct."""
    tz = _zone(zone)
    day = local_date or not_before.astimezone(tz).date()
    due = datetime.combine(day, local_time, tzinfo=tz)
    if due < not_before:
        due = datetime.combine(day + timedelta(days=1), local_time, tzinfo=tz)
    return due.astimezone(UTC)


def _audience_write(campaign: Campaign, now: datetime) -> int:
    """Write the campaign's members in ONE INSERT ... SELECT over the segment's query, each with the
    moment it is due; returns how many. Nothing about them passes through Python."""
    members = segment_recipients(segment=campaign.segment, at=now).order_by()
    if campaign.schedule_kind == ScheduleKind.LOCAL_TIME:
        zones = sorted(set(members.values_list("timezone", flat=True).distinct()))
        due = Case(
            *[
                When(
                    timezone=zone,
                    then=Value(
                        local_due(
                            zone=zone,
                            local_time=campaign.local_time,
                            local_date=campaign.local_date,
                            not_before=campaign.approved_at or now,
                        ),
                        output_field=DateTimeField(),
                    ),
                )
                for zone in zones
            ],
            default=Value(now, output_field=DateTimeField()),
            output_field=DateTimeField(),
        )
    else:
        due = Value(now, output_field=DateTimeField())
    sql, params = members.annotate(due=due).values("id", "due").query.sql_with_params()
    table = CampaignRecipient._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (campaign_id, recipient_id, due_at, state, detail)"
            f" SELECT %s, s.id, s.due, %s, '' FROM ({sql}) s WHERE 1 = 1"
            " ON CONFLICT (campaign_id, recipient_id) DO NOTHING",
            [campaign.pk, MemberState.PENDING, *params],
        )
        return cursor.rowcount


def _campaigns_start(*, now: datetime, wait: bool = True) -> int:
    """Scheduled campaigns whose start came: write the audience and begin sending (one per transaction).
    With `wait`, a worker that finds one being started by another waits for it, then finds it sending
    and shares its batches; without, it passes over it (the due-work pass: other due work goes on)."""
    started = 0
    while True:
        with transaction.atomic():
            campaign = (
                Campaign.objects.select_for_update(of=("self",), skip_locked=not wait)
                .filter(status=CampaignStatus.SCHEDULED, next_run_at__lte=now)
                .order_by("next_run_at", "pk")
                .first()
            )
            if campaign is None:
                return started
            count = _audience_write(campaign, now)
            campaign.audience, campaign.started_at = count, now
            first = CampaignRecipient.objects.filter(campaign=campaign).aggregate(t=Min("due_at"))["t"]
            if first is None:
                # An empty segment is allowed: it shows 0 and is done.
                campaign.status, campaign.finished_at, campaign.next_run_at = CampaignStatus.DONE, now, None
                campaign.note = "The segment had nobody in it."
            else:
                campaign.status, campaign.next_run_at = CampaignStatus.SENDING, max(first, now)
                campaign.note = f"{count} recipients in the audience."
            campaign.save()
            started += 1


# ---- sending ---------------------------------------------------------------------------------------------
#
# Several workers share one campaign: a batch claims its members FOR UPDATE SKIP LOCKED and never locks the
# campaign row, so two workers send two batches of the same campaign at once. A cancel needs no lock on
# the batches either: its UPDATE of the pending members waits for the rows a batch holds, then skips them
# (they are decided when it reads them again), so a batch is sent whole or not at all. A throttled campaign
# is the exception: its window is counted on the campaign row, so one worker at a time holds that row.


@dataclass
class CampaignWork:
    started: int = 0
    decided: int = 0
    refused: int = 0
    batches: int = 0
    more: bool = False  # stopped by its limit or time budget with due work left


# Where a worker's walk through a campaign's members stands: the (due_at, recipient_id) it claimed last.
# Its own, in memory: every member before it was decided or is in another worker's batch right now.
Cursor = tuple[datetime, int]

_LEAVE = -1  # the campaign has nothing more for this worker now (done, waiting, or in other hands)


def _throttle_room(campaign: Campaign, now: datetime) -> int | None:
    """How many more may go this minute (None: no throttle)."""
    if not campaign.throttle_per_minute:
        return None
    if campaign.window_started_at is None or now >= campaign.window_started_at + THROTTLE_WINDOW:
        campaign.window_started_at, campaign.window_sent = now, 0
    return max(0, campaign.throttle_per_minute - campaign.window_sent)


def _batch_send(campaign: Campaign, members: list[tuple[int, int]], now: datetime) -> tuple[int, int]:
    """Send one batch through the pipeline and record each member's outcome; returns (decided, refused)."""
    template = campaign.template.key if campaign.template_id else None
    context = {"campaign": {"id": campaign.pk, "name": campaign.name}}
    request = SendRequest(
        recipient_id=0,
        channel=campaign.channel,
        purpose=campaign.purpose,
        content=campaign.content or None,
        template=template,
        data=campaign.data,
        context=context,
        priority=campaign.priority,
        expires_at=campaign.expires_at,
        source=Source.CAMPAIGN,
        source_ref=campaign.source_ref,
    )
    requests = send_requests_for(request=request, recipient_ids=[rid for _, rid in members])
    results = messages_send_bulk(requests=requests, at=now)
    outcomes: list[tuple[int, str, int | None, str]] = []
    refused = 0
    for (member_id, _), result in zip(members, results, strict=True):
        if isinstance(result, SendRefused):
            refused += 1
            outcomes.append((member_id, MemberState.REFUSED, None, str(result)[:2000]))
        else:
            outcomes.append((member_id, MemberState.DECIDED, result.pk, ""))
    _members_record(outcomes, now)
    return len(members) - refused, refused


def _members_record(outcomes: list[tuple[int, str, int | None, str]], now: datetime) -> None:
    """Each member's outcome in one UPDATE ... FROM unnest (PostgreSQL); through the ORM elsewhere."""
    if connection.vendor != "postgresql":
        CampaignRecipient.objects.bulk_update(
            [
                CampaignRecipient(pk=pk, state=state, message_id=message_id, detail=detail, decided_at=now)
                for pk, state, message_id, detail in outcomes
            ],
            ["state", "message", "detail", "decided_at"],
            batch_size=500,
        )
        return
    # The outcomes as one JSON parameter (orjson writes it in C; psycopg dumps Python lists as arrays
    # element by element in Python).
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {CampaignRecipient._meta.db_table} c"
            " SET state = v.e->>1, message_id = (v.e->>2)::bigint, detail = v.e->>3, decided_at = %s"
            " FROM jsonb_array_elements(%s::jsonb) AS v(e) WHERE c.id = (v.e->>0)::bigint",
            [now, orjson.dumps(outcomes).decode()],
        )


def _members_claim(
    campaign_id: int, now: datetime, take: int, after: Cursor | None
) -> list[tuple[int, int, datetime]]:
    """The campaign's next `take` due pending members after `after`, by due time then recipient id,
    locked (SKIP LOCKED: another worker's batch is passed over): (member id, recipient id, due_at) each.
    Plain SQL through a psycopg cursor on PostgreSQL: the due times come back in the binary format, read
    in C (the ORM's loader parsed a thousand timestamps per batch in Python)."""
    sql = (
        f"SELECT id, recipient_id, due_at FROM {CampaignRecipient._meta.db_table}"
        # The state as a literal: a prepared statement's generic plan uses the partial index only then.
        f" WHERE campaign_id = %s AND state = '{MemberState.PENDING.value}' AND due_at <= %s"
    )
    params: list[Any] = [campaign_id, now]
    if after is not None:
        sql += " AND (due_at > %s OR (due_at = %s AND recipient_id > %s))"
        params += [after[0], after[0], after[1]]
    sql += " ORDER BY due_at, recipient_id LIMIT %s"
    params.append(take)
    with hot_cursor() as (cursor, prepare):
        if prepare:
            cursor.execute(sql + " FOR UPDATE SKIP LOCKED", params, **prepare, binary=True)
        else:
            cursor.execute(sql, params)
        return [(pk, rid, as_datetime(due)) for pk, rid, due in cursor.fetchall()]


def _campaign_locked(campaign_id: int, *, skip_locked: bool = False) -> Campaign | None:
    """The campaign's row, locked, if it is still sending (a cancel or another worker may have moved it);
    with `skip_locked`, None while another transaction holds it."""
    return (
        Campaign.objects.select_for_update(of=("self",), skip_locked=skip_locked)
        .filter(pk=campaign_id, status=CampaignStatus.SENDING)
        .first()
    )


def _campaign_settle(campaign: Campaign, now: datetime, cursors: dict[int, Cursor]) -> int:
    """This worker claimed nothing: start its walk over if due members lie behind its cursor, leave the
    campaign to the workers whose batches hold the rest, or else mark it done or waiting for its next
    members (under the campaign's row lock). Returns 0 (walk again) or _LEAVE."""
    pending = CampaignRecipient.objects.filter(campaign_id=campaign.pk, state=MemberState.PENDING)
    if pending.filter(due_at__lte=now).exists():
        # Due members this worker did not claim: behind its cursor (a batch of another worker that
        # rolled back), or in another worker's batch right now (that worker settles the campaign).
        return 0 if cursors.pop(campaign.pk, None) is not None else _LEAVE
    locked = _campaign_locked(campaign.pk)
    if locked is None:
        return _LEAVE
    # Read under the lock: another worker may have sent the next members and settled it since.
    nxt = pending.aggregate(t=Min("due_at"))["t"]
    if nxt is None:
        locked.status, locked.finished_at, locked.next_run_at = CampaignStatus.DONE, now, None
        locked.note = "Every member was decided."
    else:
        locked.next_run_at = nxt
        locked.note = f"Waiting: the next members are due at {nxt:%Y-%m-%d %H:%M} UTC."
    locked.save()
    return _LEAVE


def _campaign_step(
    *, campaign_id: int, now: datetime, size: int, work: CampaignWork, cursors: dict[int, Cursor]
) -> int:
    """One transaction: the campaign's next due batch, sent and recorded. Returns the members handled, 0
    to try again at once, or _LEAVE when the campaign has nothing more for this worker now."""
    with transaction.atomic():
        campaign = (
            Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.SENDING, next_run_at__lte=now)
            .select_related("template")
            .first()
        )
        if campaign is None:
            return _LEAVE
        if campaign.template_id and campaign.template.revision != campaign.template_revision:
            locked = _campaign_locked(campaign.pk)
            # Under the lock, the approval read above may have been superseded: an operator approved the
            # new revision since (after another worker put the campaign back to proposed).
            if locked is not None and locked.template_revision != campaign.template.revision:
                locked.status, locked.next_run_at = CampaignStatus.PROPOSED, None
                locked.note = (
                    f"Template {campaign.template.key} changed after approval (revision "
                    f"{campaign.template_revision} → {campaign.template.revision}): "
                    "approve again to send the rest."
                )
                locked.save()
            return _LEAVE
        throttled = None
        take = size
        if campaign.throttle_per_minute:
            # One worker at a time counts the window: the others pass over a throttled campaign.
            throttled = _campaign_locked(campaign.pk, skip_locked=True)
            if throttled is None:
                return _LEAVE
            room = _throttle_room(throttled, now)
            if room == 0:
                throttled.next_run_at = throttled.window_started_at + THROTTLE_WINDOW
                throttled.note = f"Throttled: {throttled.throttle_per_minute} per minute."
                throttled.save()
                return _LEAVE
            take = min(size, room)
        claimed = _members_claim(campaign.pk, now, take, cursors.get(campaign.pk))
        if not claimed:
            return _campaign_settle(campaign, now, cursors)
        cursors[campaign.pk] = (claimed[-1][2], claimed[-1][1])
        decided, refused = _batch_send(campaign, [(pk, rid) for pk, rid, _ in claimed], now)
        work.decided += decided
        work.refused += refused
        work.batches += 1
        if throttled is not None:
            throttled.window_sent += len(claimed)
            throttled.save(update_fields=["window_started_at", "window_sent", "updated_at"])
        return len(claimed)


def campaigns_advance(
    *,
    now: datetime,
    limit: int = 10_000,
    batch_size: int | None = None,
    time_budget: float | None = None,
    wait_for_start: bool = True,
) -> CampaignWork:
    """Start campaigns whose time came, then send due members batch by batch, a batch per due campaign in
    turn, until `limit` members, `time_budget` seconds, or nothing is due for this worker. Other workers
    may run this at the same time: they share the campaigns batch by batch (`wait_for_start`: wait for
    a campaign another worker is starting, to share it). `more` says whether this one stopped with due
    work left."""
    work = CampaignWork(started=_campaigns_start(now=now, wait=wait_for_start))
    size = batch_size or int(_setting("CAMPAIGN_BATCH_SIZE", BATCH_SIZE))
    cursors: dict[int, Cursor] = {}
    handled, began = 0, time_module.monotonic()
    left: set[int] = set()
    due = _due_campaign_ids(now)

    def step(campaign_id: int) -> int:
        take = min(size, limit - handled)
        return _campaign_step(campaign_id=campaign_id, now=now, size=take, work=work, cursors=cursors)

    while due:
        for campaign_id in list(due):
            spent = time_module.monotonic() - began
            if handled >= limit or (time_budget is not None and spent > time_budget):
                work.more = _work_left(due, now)
                return work
            n = step(campaign_id)
            if n == 0:  # the walk starts over from the first due member
                n = step(campaign_id)
            if n > 0:
                handled += n
            else:
                due.remove(campaign_id)
                left.add(campaign_id)
        if not due:
            # Campaigns that became due while this worker was sending (a scheduled one started) join in.
            due = [pk for pk in _due_campaign_ids(now) if pk not in left]
    return work


def _work_left(campaign_ids: list[int], now: datetime) -> bool:
    """Whether one of these campaigns, still sending and due, has work for this worker now: a due member
    no other worker's batch holds (SKIP LOCKED), or no due member left (it is to be settled). Due members
    all in other workers' batches are theirs: those workers settle the campaign."""
    sending = Campaign.objects.filter(
        pk__in=campaign_ids, status=CampaignStatus.SENDING, next_run_at__lte=now
    )
    with transaction.atomic():
        for campaign_id in sending.values_list("pk", flat=True):
            due = CampaignRecipient.objects.filter(
                campaign_id=campaign_id, state=MemberState.PENDING, due_at__lte=now
            )
            if not due.exists() or due.select_for_update(skip_locked=True).exists():
                return True
    return False


def _due_campaign_ids(now: datetime) -> list[int]:
    return list(
        Campaign.objects.filter(status=CampaignStatus.SENDING, next_run_at__lte=now)
        .order_by("next_run_at", "pk")
        .values_list("pk", flat=True)[:1000]
    )


def campaigns_advance_due(*, now: datetime, limit: int) -> int:
    """Due-work entry point (settings.ORCHESTRATOR["DUE_WORK"]): up to `limit` members per pass; a big
    campaign (one started now, members whose local time came, or a task that was lost) goes on in
    CAMPAIGN_TASKS tasks right after, which share it (each runs for a time budget, then hands over)."""
    # A campaign being started by a task (a big audience written down) is the tasks' to share: this pass
    # does not wait for it, the rest of the due work goes on.
    work = campaigns_advance(now=now, limit=limit, wait_for_start=False)
    if work.more:
        transaction.on_commit(_kick, robust=True)
    return work.decided + work.refused


# ---- the test send and progress -----------------------------------------------------------------------


def campaign_test_send(
    *, campaign: Campaign, recipient: Recipient, now: datetime, user: Any = None
) -> Message:
    """Send the campaign's message to one named recipient now (before approval, to see it for real).
    Through the pipeline like any message; raises SendRefused (nothing written) when it would be refused."""
    campaign_action_authorize(user=user, action="test", campaign=campaign)
    if campaign.status in CAMPAIGN_FINAL:
        raise CampaignConflict("finished", f"{campaign.name} is {campaign.status}: nothing to test.")
    return message_send(
        recipient=recipient,
        channel=campaign.channel,
        purpose=campaign.purpose,
        content=campaign.content or None,
        template=campaign.template.key if campaign.template_id else None,
        data=campaign.data,
        context={"campaign": {"id": campaign.pk, "name": campaign.name}},
        priority=campaign.priority,
        expires_at=campaign.expires_at,
        source=Source.CAMPAIGN,
        source_ref=f"{campaign.source_ref} · test"[:200],
        at=now,
    )
