"""The send pipeline: every message, whatever its source (API, journey step, campaign), goes through here.

`messages_send_bulk` takes many requests at once, set-based; `message_send` is its one-request case. For
each request, in order (DESIGN.md):

render (a template, for the recipient's locale: one query for the templates, one for the recipients, each
distinct set of values rendered once; a missing value refuses that message with its reason) → validate
(recipient known and reachable on the channel, the named contact point exists) → choose the
channel for `auto` (next best channel, which asks the governor) → lint against the channel's job (blocking
violations refuse; warnings are kept on the message) → the channel's default shelf life when no expires_at
is given (counted from when it may first go out) → the governor decides and records every Message in one
short locked transaction (one statement pair for one message, set-based for many) → delivery of the
accepted ones is enqueued on commit by the channels app, which hears of every new message.

A refusal refuses that request only, and writes nothing for it. This module sits above governor and
channels_app (it imports both); journeys and campaigns call it and only map their steps to requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from channels_app.limits import content_problems, schedule_problems
from channels_app.lint import Severity, channel_policy_views, message_lint
from channels_app.templating import RenderRequest, contents_render_bulk
from governor.services import MessageDraft, messages_decide
from orchestrator.db import hot_atomic, is_postgres

from .channel_choice import ChoiceRequest, channels_choose_bulk
from .models import AUTO_CHANNEL, Channel, Message, Purpose, Recipient, Source
from .selectors import (
    HeldRecipient,
    reachable_kind,
    recipient_hold,
    recipients_reachable_points,
    recipients_unreachable_reasons,
)


class SendRefused(Exception):
    """The message was refused before the governor: nothing was written.

    `errors` maps a field to a list of {code, detail} (the API turns this into a 400).
    """

    def __init__(self, errors: Mapping[str, list[dict[str, str]]]):
        super().__init__("; ".join(e["detail"] for errs in errors.values() for e in errs))
        self.errors = dict(errors)

    @property
    def field(self) -> str:
        return next(iter(self.errors))

    @property
    def code(self) -> str:
        return self.errors[self.field][0]["code"]

    @property
    def reason(self) -> str:
        return "; ".join(e["detail"] for errs in self.errors.values() for e in errs)


def _refuse(field: str, code: str, detail: str) -> SendRefused:
    return SendRefused({field: [{"code": code, "detail": detail}]})


@dataclass(frozen=True)
class SendRequest:
    """One message to send, from any source."""

    recipient_id: int
    channel: str  # a channel, or "auto"
    purpose: str
    content: Mapping[str, Any] | None = None  # or a template:
    priority: int = 50
    expires_at: datetime | None = None
    deliver_after: datetime | None = None
    source: str = Source.API
    source_ref: str = ""
    to: str | None = None  # a specific contact point of the recipient
    avoid_channels: frozenset[str] = frozenset()  # for `auto`: channels this journey already used
    template: str | None = None  # a template key, rendered here for the recipient's locale
    data: Mapping[str, Any] | None = None  # the template's {{ data.* }}
    context: Mapping[str, Any] | None = None  # its {{ event.* }}, {{ journey.* }}, {{ campaign.* }}


def send_requests_for(*, request: SendRequest, recipient_ids: Sequence[int]) -> list[SendRequest]:
    """`request` once per recipient (a campaign batch, a journey step's due enrollments): copies that
    differ only in recipient_id, without running the dataclass's __init__ for each."""
    return [_replaced(request, recipient_id=rid) for rid in recipient_ids]


_CHANNELS = frozenset((*Channel.values, AUTO_CHANNEL))  # Choices.values builds a new list per call
_PURPOSES = frozenset(Purpose.values)


def _problems_refusal(problems) -> SendRefused:
    errors: dict[str, list[dict[str, str]]] = {}
    for p in problems:
        errors.setdefault(p.field, []).append({"code": p.code, "detail": p.detail})
    return SendRefused(errors)


def _check_fields(r: SendRequest, at: datetime) -> SendRefused | None:
    if r.channel not in _CHANNELS:
        return _refuse("channel", "invalid_channel", f"Unknown channel {r.channel!r}.")
    if r.purpose not in _PURPOSES:
        return _refuse("purpose", "invalid_purpose", f"Unknown purpose {r.purpose!r}.")
    if not 0 <= int(r.priority) <= 100:
        return _refuse("priority", "invalid_priority", "priority must be between 0 and 100.")
    if r.expires_at is not None and r.expires_at <= at:
        return _refuse("expires_at", "already_expired", "expires_at is already in the past.")
    if r.to is not None and r.channel == AUTO_CHANNEL:
        return _refuse("to", "to_needs_channel", "`to` names a contact point, so name its channel too.")
    if r.template is None and r.content is None:
        return _refuse("content", "content_required", "Give content or a template.")
    if r.template is not None and r.content is not None:
        return _refuse("template", "template_and_content", "Give a template or content, not both.")
    # The documented limits (docs/limits.md): content sizes and URLs (a template's rendered content is
    # checked when it is rendered), scheduling bounds.
    problems = schedule_problems(deliver_after=r.deliver_after, expires_at=r.expires_at, at=at)
    if r.content is not None:
        problems = [*content_problems(channel=r.channel, content=r.content), *problems]
    if problems:
        return _problems_refusal(problems)
    return None


def _replaced(obj, **changes):
    """A shallow copy of a frozen dataclass with `changes` (dataclasses.replace re-runs __init__ and
    copy.copy goes through __reduce_ex__: 3-6 us each, per message of a 100k campaign)."""
    new = object.__new__(type(obj))
    fields = new.__dict__
    fields.update(obj.__dict__)
    fields.update(changes)
    return new


def _render(
    requests: list[SendRequest], pending: list[int], results: list, recipients: Mapping[int, Recipient] | None
) -> dict[int, list[dict[str, str]]]:
    """The render stage: templated requests get their recipient's content (or a refusal with the
    template, locale, field, line and reason). Returns sandbox reports to keep as warnings."""
    templated = [n for n in pending if requests[n].template is not None]
    reports: dict[int, list[dict[str, str]]] = {}
    if not templated:
        return reports
    renders = contents_render_bulk(
        items=[
            RenderRequest(
                template=requests[n].template,
                recipient_id=requests[n].recipient_id,
                data=requests[n].data,
                context=requests[n].context,
            )
            for n in templated
        ],
        recipients=recipients,
    )
    checked: dict[tuple[int, str], list] = {}  # recipients sharing values share one rendering
    for n, rendered in zip(templated, renders, strict=True):
        if rendered.problem is None:
            r = requests[n]
            key = (id(rendered.content), r.channel)
            problems = checked.get(key)
            if problems is None:
                problems = checked[key] = content_problems(channel=r.channel, content=rendered.content)
            if problems:
                results[n] = _problems_refusal(problems)
                continue
            requests[n] = _replaced(r, content=rendered.content)
            if rendered.sandbox:
                reports[n] = [
                    {
                        "code": "template_sandbox",
                        "detail": "Outside the template's context, rendered as nothing: "
                        f"{', '.join(rendered.sandbox)}.",
                    }
                ]
        elif rendered.problem.code == "unknown_recipient":
            results[n] = _refuse(
                "recipient", "unknown_recipient", f"No recipient with id {requests[n].recipient_id}."
            )
        else:
            results[n] = _refuse("template", rendered.problem.code, str(rendered.problem))
    return reports


def messages_send_bulk(
    *,
    requests: Sequence[SendRequest],
    at: datetime,
    recipients: Mapping[int, Recipient] | None = None,
    held: HeldRecipient | None = None,
) -> list[Message | SendRefused]:
    """Run many requests through the pipeline at once: per request, the recorded Message (whatever the
    governor decided) or the SendRefused that says why nothing was written for it.

    A handful of queries whatever the count (contact points, policies, the `auto` choice, the lint once per
    distinct content and channel) and one governor call. `recipients` may pass Recipient rows the caller
    already holds (their external ids name them in refusals); `held`, for one request on a named channel,
    the recipient the caller already locked and read in its transaction (`recipient_hold` for that
    channel, purpose and source: the API's send).
    """
    results: list[Message | SendRefused | None] = [None] * len(requests)
    pending: list[int] = []
    # The field checks read everything but the recipient: once per distinct request shape (a campaign
    # batch or a journey step is one shape). The content objects outlive the loop, so ids are stable.
    passed: set[tuple] = set()
    for n, r in enumerate(requests):
        shape = (
            r.channel,
            r.purpose,
            r.priority,
            r.expires_at,
            r.deliver_after,
            r.to,
            r.template,
            id(r.content) if r.content is not None else None,
        )
        if shape in passed:
            pending.append(n)
            continue
        refusal = _check_fields(r, at)  # a refusal is built per request (each is its own exception)
        if refusal is not None:
            results[n] = refusal
        else:
            passed.add(shape)
            pending.append(n)
    requests = list(requests)
    template_reports = _render(requests, pending, results, recipients)
    pending = [n for n in pending if results[n] is None]
    if not pending:
        return results  # type: ignore[return-value]

    # One message on a named channel (the API's hot path, PostgreSQL): one transaction from here to the
    # insert, whose first statement locks the recipient and reads their reachability and opt-out with it.
    if len(pending) == 1 and requests[pending[0]].channel != AUTO_CHANNEL and is_postgres():
        with hot_atomic():
            r = requests[pending[0]]
            if held is None or held.id != r.recipient_id:
                held = recipient_hold(
                    recipient_id=r.recipient_id, channel=r.channel, purpose=r.purpose, source=r.source
                )
            return _send(requests, pending, results, recipients, template_reports, at, held)
    return _send(requests, pending, results, recipients, template_reports, at, None)


def _send(
    requests: list[SendRequest],
    pending: list[int],
    results: list,
    recipients: Mapping[int, Recipient] | None,
    template_reports: Mapping[int, list[dict[str, str]]],
    at: datetime,
    held: HeldRecipient | None,
) -> list[Message | SendRefused]:
    """Validate, choose, lint and decide the pending requests (`held`: the one request's recipient, locked
    and read by the caller)."""
    # Where each recipient can be reached (opted in, not undeliverable; a reply to the recipient's own
    # message needs only a working address): one query per kind of source in the batch.
    reachable: dict[tuple[str, int], dict[str, list[str]]] = {}
    if held is not None:
        reachable[(reachable_kind(requests[pending[0]].source), held.id)] = held.points
    else:
        by_kind: dict[str, set[int]] = {}
        for n in pending:
            r = requests[n]
            by_kind.setdefault(reachable_kind(r.source), set()).add(r.recipient_id)
        for kind, ids in by_kind.items():
            for rid, points in recipients_reachable_points(recipient_ids=ids, source=kind).items():
                reachable[(kind, rid)] = points
    known = dict(recipients or {})
    policies = channel_policy_views()

    # Validation and the `auto` choice. Refusals name the recipient by external id and say why a channel
    # is closed, read at the end for the few that need it.
    refused: dict[int, tuple[str, str, str]] = {}  # n -> (field, code, detail with {who})
    chosen: dict[int, tuple[str, str]] = {}
    autos = []
    for n in pending:
        r = requests[n]
        points = reachable.get((reachable_kind(r.source), r.recipient_id), {})
        if r.channel == AUTO_CHANNEL:
            autos.append(n)
        elif r.channel not in points:
            refused[n] = ("channel", "unreachable", "")
        elif r.to is not None and r.to not in points[r.channel]:
            refused[n] = ("to", "unknown_contact_point", "")
        else:
            chosen[n] = (r.channel, "")
    if autos:
        picks = channels_choose_bulk(
            requests=[
                ChoiceRequest(
                    recipient_id=requests[n].recipient_id,
                    purpose=requests[n].purpose,
                    content=requests[n].content,
                    reachable=frozenset(
                        reachable.get((reachable_kind(requests[n].source), requests[n].recipient_id), ())
                    ),
                    avoid=requests[n].avoid_channels,
                    priority=int(requests[n].priority),
                    expires_at=requests[n].expires_at,
                    deliver_after=requests[n].deliver_after,
                )
                for n in autos
            ],
            at=at,
            policies=policies,
        )
        closed = recipients_unreachable_reasons(recipient_ids={requests[n].recipient_id for n in autos})
        for n, pick in zip(autos, picks, strict=True):
            if pick is None:
                refused[n] = ("channel", "no_channel", "")
                continue
            reason = pick.reason
            why = closed.get(requests[n].recipient_id)
            if why:
                # Rerouted: say which channels were closed and why (a bounced address, an opted-out number).
                reason += "; not " + "; not ".join(f"{ch}: {text}" for ch, text in sorted(why.items()))
            chosen[n] = (pick.channel, reason)
    if refused:
        _refusals_explain(requests, refused, known, results)

    # Lint once per distinct content object and channel (a journey step or a campaign shares one), then
    # the drafts for the governor.
    lints: dict[tuple[int, str, str], tuple[list[dict], list[dict]]] = {}
    protos: dict[tuple, MessageDraft] = {}
    drafts: list[MessageDraft] = []
    drafted: list[int] = []
    for n in pending:
        if n not in chosen:
            continue
        r = requests[n]
        channel, channel_reason = chosen[n]
        key = (id(r.content), channel, r.purpose)
        lint = lints.get(key)
        if lint is None:
            violations = message_lint(
                channel=channel, purpose=r.purpose, content=r.content, policy=policies.get(channel)
            )
            lint = lints[key] = (
                [{"code": v.code, "detail": v.reason} for v in violations if v.severity == Severity.BLOCK],
                [{"code": v.code, "detail": v.reason} for v in violations],
            )
        blocking, warnings = lint
        if blocking:
            results[n] = SendRefused({"content": blocking})
            continue
        reports = template_reports.get(n)
        # Requests alike but for the recipient (a campaign batch, a journey step) share one draft built by
        # the dataclass; each gets a copy of it with its own recipient.
        shape = (key, channel_reason, r.priority, r.expires_at, r.deliver_after, r.source, r.source_ref)
        shape += (r.channel, r.to, id(reports) if reports else None)
        proto = protos.get(shape)
        if proto is None:
            policy = policies.get(channel)
            proto = protos[shape] = MessageDraft(
                recipient_id=r.recipient_id,
                channel=channel,
                purpose=r.purpose,
                content=r.content if isinstance(r.content, dict) else dict(r.content),
                priority=int(r.priority),
                expires_at=r.expires_at,
                deliver_after=r.deliver_after,
                # Each channel's own shelf life (push expires fast), from when it may first go out.
                shelf_life=policy.default_ttl if policy is not None and r.expires_at is None else None,
                source=r.source,
                source_ref=r.source_ref,
                requested_channel=r.channel,
                channel_reason=channel_reason,
                # The lint's list, shared by the messages with this content (written once by the COPY).
                warnings=[*warnings, *reports] if reports else warnings,
                to_address=r.to or "",
                held=held,
            )
            drafts.append(proto)
        else:
            drafts.append(_replaced(proto, recipient_id=r.recipient_id))
        drafted.append(n)

    if drafts:
        for n, message in zip(drafted, messages_decide(drafts=drafts, at=at), strict=True):
            if message is None:  # erased after its reachability was read, before the governor's lock
                who = requests[n].recipient_id
                results[n] = _refuse("recipient", "unknown_recipient", f"Recipient {who} was erased.")
                continue
            recipient = known.get(message.recipient_id)
            if recipient is not None:
                Message.recipient.field.set_cached_value(message, recipient)
            results[n] = message
    return results  # type: ignore[return-value]


def _refusals_explain(
    requests: Sequence[SendRequest],
    refused: Mapping[int, tuple[str, str, str]],
    known: Mapping[int, Recipient],
    results: list,
) -> None:
    """Turn refusals into SendRefused with the recipient's external id and why a channel is closed (two
    queries for the whole batch, only when something was refused)."""
    ids = {requests[n].recipient_id for n in refused}
    names = {pk: r.external_id for pk, r in known.items() if pk in ids}
    names.update(Recipient.objects.filter(pk__in=ids - set(names)).values_list("pk", "external_id"))
    closed = recipients_unreachable_reasons(recipient_ids=ids)
    for n, (field, code, _) in refused.items():
        r = requests[n]
        who = names.get(r.recipient_id)
        if who is None:
            results[n] = _refuse("recipient", "unknown_recipient", f"No recipient with id {r.recipient_id}.")
            continue
        if code == "no_channel":
            results[n] = _refuse(field, code, f"No channel can carry this {r.purpose} message to {who}.")
            continue
        label = Channel(r.channel).label
        why = closed.get(r.recipient_id, {}).get(r.channel)
        because = f" ({why})." if why else "."
        if code == "unknown_contact_point":
            detail = f"{who} has no reachable {label} contact point {r.to!r}{because}"
        elif why and "undeliverable" in why:
            code, detail = "undeliverable", f"Not sent to {who} on {label}: {why}."
        else:
            detail = f"{who} has no opted-in {label} contact point{because}"
        results[n] = _refuse(field, code, detail)


def message_send(
    *,
    recipient: Recipient,
    channel: str,
    purpose: str,
    content: Mapping[str, Any] | None = None,
    priority: int = 50,
    expires_at: datetime | None = None,
    deliver_after: datetime | None = None,
    source: str = Source.API,
    source_ref: str = "",
    to: str | None = None,
    avoid_channels: frozenset[str] = frozenset(),
    template: str | None = None,
    data: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    at: datetime | None = None,
    held: HeldRecipient | None = None,
) -> Message:
    """Run one message through the pipeline and return the recorded Message (any decision).

    Raises SendRefused (nothing written) for input the pipeline will not accept. `held`: see
    messages_send_bulk.
    """
    request = SendRequest(
        recipient_id=recipient.pk,
        channel=channel,
        purpose=purpose,
        content=content,
        priority=priority,
        expires_at=expires_at,
        deliver_after=deliver_after,
        source=source,
        source_ref=source_ref,
        to=to,
        avoid_channels=avoid_channels,
        template=template,
        data=data,
        context=context,
    )
    result = messages_send_bulk(
        requests=[request], at=at or timezone.now(), recipients={recipient.pk: recipient}, held=held
    )[0]
    if isinstance(result, SendRefused):
        raise result
    return result
