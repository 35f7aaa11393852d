"""The journey definition (CONTRACT.md): validation with errors naming step, field and reason, and the
compiled form the scheduler walks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from channels_app.limits import content_problems
from channels_app.lint import Severity, message_lint
from governor.holdout import MAX_SHARE
from orchestrator import limits
from orchestrator.models import AUTO_CHANNEL, Channel, Purpose

from .models import PROPERTY_KEY_RE, Enrollment, Journey, ReentryPolicy

STEP_TYPES = ("send", "wait", "wait_for_event", "branch", "exit")
WAIT_TYPES = frozenset({"wait", "wait_for_event"})
BRANCH_CONDITIONS = ("converted", "engaged")


@dataclass(frozen=True)
class DefinitionError:
    step: str  # the step id ("" for the journey itself)
    field: str
    code: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"step": self.step, "field": self.field, "code": self.code, "reason": self.reason}

    def __str__(self) -> str:
        where = f"step {self.step!r} · {self.field}" if self.step else self.field
        return f"{where}: {self.reason}"


class DefinitionInvalid(Exception):
    """The definition cannot be saved; `errors` says where and why."""

    def __init__(self, errors: list[DefinitionError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors

    def as_response(self) -> dict[str, Any]:
        return {
            "code": "invalid_definition",
            "detail": str(self),
            "definition": [str(e) for e in self.errors],
            "errors": [e.as_dict() for e in self.errors],
        }


# Lengths of the columns a definition's values end up in (checked at save, not found at approve).
NAME_MAX = Journey._meta.get_field("name").max_length
EVENT_MAX = Journey._meta.get_field("trigger_event").max_length
# Step ids are stored on enrollments and step runs, and "<slug> · <step id>" on messages (200).
STEP_ID_MAX = 80
assert Enrollment._meta.get_field("step_id").max_length >= STEP_ID_MAX


def duration_parse(value: Any) -> timedelta | None:
    """ISO 8601 (`PT2H`, `P1D`) or `HH:MM:SS` within the documented bound (P365D); None otherwise."""
    try:
        return limits.duration_parse(value)
    except limits.LimitError:
        return None


def duration_format(value: timedelta) -> str:
    """A short human form: `2 h`, `7 d`, `1 d 2 h 30 min`."""
    total = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size} {unit}")
            total %= size
    return " ".join(parts) or "0 s"


class _Collector:
    def __init__(self) -> None:
        self.errors: list[DefinitionError] = []

    def add(self, step: str, field_: str, code: str, reason: str) -> None:
        self.errors.append(DefinitionError(step, field_, code, reason))

    def duration(self, step: str, field_: str, value: Any, *, required: bool = True) -> timedelta | None:
        if value is None:
            if required:
                self.add(step, field_, "required", f"{field_} is required (ISO 8601, e.g. PT2H or P1D).")
            return None
        try:
            return limits.duration_parse(value)
        except limits.LimitError as exc:
            self.add(step, field_, exc.code or "invalid_duration", str(exc))
            return None

    def text(
        self, step: str, field_: str, value: Any, *, max_length: int, required: bool = True, what: str = ""
    ) -> bool:
        """A non-empty string of at most max_length characters (the column it is stored in)."""
        if value is None or value == "":
            if required:
                self.add(step, field_, "required", f"{what or field_} is required.")
            return False
        if not isinstance(value, str) or not value.strip():
            self.add(step, field_, "invalid", f"{what or field_} must be a non-empty string.")
            return False
        if len(value) > max_length:
            self.add(
                step,
                field_,
                "too_long",
                f"{what or field_} is {len(value)} characters; at most {max_length}.",
            )
            return False
        return True


def _send_options_validate(c: _Collector, sid: str, step: dict) -> None:
    if step.get("on_suppressed", "continue") not in ("continue", "exit"):
        c.add(sid, "on_suppressed", "invalid_choice", "on_suppressed must be continue or exit.")
    priority = step.get("priority", 50)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100:
        c.add(sid, "priority", "invalid_priority", "priority must be a whole number from 0 to 100.")
    if "expires_after" in step:
        c.duration(sid, "expires_after", step["expires_after"])


def _template_validate(c: _Collector, sid: str, step: dict, channel: str) -> None:
    """A send step may name a template (rendered per recipient at send time, linted then) with `data`."""
    from channels_app.models import MessageTemplate

    if "content" in step:
        c.add(sid, "template", "template_and_content", "Give a template or content, not both.")
        return
    key = step["template"]
    template = (
        MessageTemplate.objects.filter(key=key).first() if isinstance(key, str) and len(key) <= 100 else None
    )
    if template is None:
        c.add(sid, "template", "unknown_template", f"There is no template {str(key)[:100]!r}.")
        return
    if template.channel != AUTO_CHANNEL and channel not in (template.channel, AUTO_CHANNEL):
        c.add(sid, "template", "template_channel", f"{template.key} is written for {template.channel}.")
    if not isinstance(step.get("data", {}), dict):
        c.add(sid, "data", "invalid", "data must be an object of template variables.")
    _send_options_validate(c, sid, step)


def _send_validate(c: _Collector, sid: str, step: dict) -> None:
    channel = step.get("channel")
    purpose = step.get("purpose", Purpose.ENGAGEMENT)
    if channel not in (*Channel.values, AUTO_CHANNEL):
        c.add(
            sid, "channel", "invalid_channel", f"channel must be one of {', '.join(Channel.values)} or auto."
        )
        return
    if purpose not in Purpose.values:
        c.add(sid, "purpose", "invalid_purpose", f"purpose must be one of {', '.join(Purpose.values)}.")
        return
    if "template" in step:
        _template_validate(c, sid, step, channel)
        return
    content = step.get("content")
    if not isinstance(content, dict) or not any(content.get(k) for k in ("body", "title", "subject")):
        c.add(
            sid,
            "content",
            "content_required",
            "content must be an object with at least a body or title (or name a template).",
        )
        return
    sized = content_problems(channel=channel, content=content)
    for p in sized:
        c.add(sid, p.field, p.code, p.detail)
    if sized:
        return
    _send_options_validate(c, sid, step)
    channels = list(Channel.values) if channel == AUTO_CHANNEL else [channel]
    blocked: dict[str, list] = {}
    for ch in channels:
        blocking = [
            v
            for v in message_lint(channel=ch, purpose=purpose, content=content)
            if v.severity == Severity.BLOCK
        ]
        if blocking:
            blocked[ch] = blocking
    if channel != AUTO_CHANNEL and blocked:
        for v in blocked[channel]:
            c.add(sid, "content", v.code, v.reason)
    elif channel == AUTO_CHANNEL and len(blocked) == len(channels):
        c.add(sid, "content", "no_channel_fits", "No channel's policy accepts this content for auto.")


def holdout_share(definition: dict) -> Decimal | None:
    """The definition's holdout share (`"holdout": {"share": 0.1}` or `"holdout": 0.1`); None if invalid."""
    raw = definition.get("holdout")
    if raw is None:
        return Decimal(0)
    share = raw.get("share", 0) if isinstance(raw, dict) else raw
    if isinstance(share, bool) or not isinstance(share, int | float | str):
        return None
    try:
        value = Decimal(str(share))
    except ArithmeticError:
        return None
    if not value.is_finite() or not Decimal(0) <= value <= MAX_SHARE:
        return None
    return value.quantize(Decimal("0.001"))


def definition_validate(definition: Any, *, slug: str | None = None) -> dict[str, Any]:
    """Return the definition if it can run; raise DefinitionInvalid listing every problem."""
    c = _Collector()
    if not isinstance(definition, dict):
        raise DefinitionInvalid([DefinitionError("", "definition", "invalid", "Expected a JSON object.")])
    if slug is not None and definition.get("slug", slug) != slug:
        c.add("", "slug", "slug_mismatch", f"slug cannot change (it is {slug!r}).")
    c.text("", "name", definition.get("name"), max_length=NAME_MAX)
    owner = definition.get("owner_channel", "")
    if owner and owner not in Channel.values:
        c.add(
            "",
            "owner_channel",
            "invalid_channel",
            f"owner_channel must be one of {', '.join(Channel.values)}.",
        )
    trigger = definition.get("trigger")
    if trigger is not None and (
        not isinstance(trigger, dict) or not isinstance(trigger.get("event", ""), str)
    ):
        c.add("", "trigger", "invalid", 'trigger must look like {"event": "cart_abandoned"}.')
    elif trigger:
        c.text("", "trigger.event", trigger.get("event"), max_length=EVENT_MAX, required=False)
    goal = definition.get("goal")
    if goal is not None:
        if not isinstance(goal, dict) or not goal.get("event"):
            c.add("", "goal.event", "required", 'goal must look like {"event": "purchase", "within": "P3D"}.')
        else:
            c.text("", "goal.event", goal.get("event"), max_length=EVENT_MAX)
            if "within" in goal:
                c.duration("", "goal.within", goal["within"])
            value_property = goal.get("value_property", "")
            if value_property and (
                not isinstance(value_property, str) or not PROPERTY_KEY_RE.fullmatch(value_property)
            ):
                c.add(
                    "",
                    "goal.value_property",
                    "invalid",
                    "value_property names the goal event's property holding the revenue (e.g. amount).",
                )
    if "holdout" in definition and holdout_share(definition) is None:
        c.add(
            "",
            "holdout.share",
            "invalid_holdout_share",
            "The holdout share is a fraction from 0 to 0.5 (0.1 holds out 10 % of entrants); "
            "more than half held out is refused.",
        )
    reentry = definition.get("reentry")
    if reentry is not None:
        policy = reentry.get("policy") if isinstance(reentry, dict) else None
        if policy not in ReentryPolicy.values:
            c.add(
                "",
                "reentry.policy",
                "invalid_choice",
                f"policy must be one of {', '.join(ReentryPolicy.values)}.",
            )
        elif policy == ReentryPolicy.COOLDOWN:
            c.duration("", "reentry.cooldown", reentry.get("cooldown"))

    steps = definition.get("steps")
    if not isinstance(steps, list) or not steps:
        c.add("", "steps", "required", "steps must be a non-empty list.")
        raise DefinitionInvalid(c.errors)
    if len(steps) > limits.MAX_JOURNEY_STEPS:
        c.add("", "steps", "too_many_steps", f"{len(steps)} steps; at most {limits.MAX_JOURNEY_STEPS}.")
        raise DefinitionInvalid(c.errors)
    ids: list[str] = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            c.add(f"#{i + 1}", "step", "invalid", "Each step must be a JSON object.")
            continue
        sid = step.get("id")
        if not isinstance(sid, str) or not sid.strip():
            c.add(f"#{i + 1}", "id", "required", "Each step needs an id.")
            continue
        if len(sid) > STEP_ID_MAX:
            c.add(f"#{i + 1}", "id", "too_long", f"A step id is at most {STEP_ID_MAX} characters.")
            continue
        if sid in ids:
            c.add(sid, "id", "duplicate_id", f"Step id {sid!r} is used twice.")
        ids.append(sid)
    known = set(ids)
    for step in steps:
        if not isinstance(step, dict) or not isinstance(step.get("id"), str):
            continue
        sid, kind = step["id"], step.get("type")
        if kind not in STEP_TYPES:
            c.add(
                sid,
                "type",
                "unknown_step_type",
                f"Unknown step type {kind!r}; expected one of {', '.join(STEP_TYPES)}.",
            )
        elif kind == "send":
            _send_validate(c, sid, step)
        elif kind == "wait":
            c.duration(sid, "duration", step.get("duration"))
        elif kind == "wait_for_event":
            c.text(sid, "event", step.get("event"), max_length=EVENT_MAX, what="the event name to wait for")
            c.duration(sid, "timeout", step.get("timeout"))
            if step.get("on_timeout", "continue") not in ("continue", "exit"):
                c.add(sid, "on_timeout", "invalid_choice", "on_timeout must be continue or exit.")
        elif kind == "branch":
            cond = step.get("if")
            ok = cond in BRANCH_CONDITIONS or (
                isinstance(cond, dict) and isinstance(cond.get("attribute"), str) and "equals" in cond
            )
            if not ok:
                c.add(
                    sid,
                    "if",
                    "invalid_condition",
                    'if must be converted, engaged or {"attribute": k, "equals": v}.',
                )
            if "then" not in step:
                c.add(sid, "then", "required", "A branch needs a then step id.")
            for key in ("then", "else"):
                if key not in step or (key == "else" and step[key] in (None, "")):
                    continue
                if not isinstance(step[key], str):
                    c.add(sid, key, "invalid", f"{key} must be a step id (a string).")
                elif step[key] not in known:
                    c.add(sid, key, "unknown_step", f"{key} goes to {step[key]!r}, which is not a step id.")
    if not c.errors:
        _cycles_check(c, steps)
    if c.errors:
        raise DefinitionInvalid(c.errors)
    return definition


def definition_channels(definition: Any) -> list[str]:
    """The channels a definition may send on (its owner channel too); `auto` may pick any channel."""
    if not isinstance(definition, dict):
        return []
    found = set()
    owner = definition.get("owner_channel")
    if owner in Channel.values:
        found.add(owner)
    for step in definition.get("steps") or []:
        if isinstance(step, dict) and step.get("type") == "send":
            channel = step.get("channel")
            if channel == AUTO_CHANNEL:
                found.update(Channel.values)
            elif channel in Channel.values:
                found.add(channel)
    return [c for c in Channel.values if c in found]


def _successors(steps: list[dict], index: int) -> list[str]:
    step = steps[index]
    following = [steps[index + 1]["id"]] if index + 1 < len(steps) else []
    if step["type"] == "exit":
        return []
    if step["type"] == "branch":
        return [step["then"], step.get("else") or (following[0] if following else None)]
    return following


def _cycle_find(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of `graph` as a path (first node repeated at the end), or None. Iterative depth-first
    search: a definition is at most MAX_JOURNEY_STEPS long, but no recursion limit is ever near."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for root in graph:
        if root in state:
            continue
        path: list[str] = [root]
        pending: list[list[str]] = [list(reversed(graph.get(root, [])))]
        state[root] = 1
        while path:
            if not pending[-1]:
                state[path.pop()] = 2
                pending.pop()
                continue
            nxt = pending[-1].pop()
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                pending.append(list(reversed(graph.get(nxt, []))))
    return None


def _cycles_check(c: _Collector, steps: list[dict]) -> None:
    """A loop must pass through a wait (else one enrollment would send without end in one go) and through
    a send (a loop of waits and branches alone would keep an enrollment busy forever, doing nothing)."""
    index = {s["id"]: i for i, s in enumerate(steps)}
    successors = {s["id"]: [n for n in _successors(steps, i) if n] for i, s in enumerate(steps)}

    def without(kinds: frozenset[str]) -> dict[str, list[str]]:
        keep = {sid for sid in successors if steps[index[sid]]["type"] not in kinds}
        return {sid: [n for n in nexts if n in keep] for sid, nexts in successors.items() if sid in keep}

    loop = _cycle_find(without(WAIT_TYPES))
    if loop:
        c.add(loop[-1], "then", "cycle_without_wait", f"The loop {' → '.join(loop)} has no wait step.")
    loop = _cycle_find(without(frozenset({"send"})))
    if loop:
        c.add(
            loop[-1],
            "then",
            "cycle_without_send",
            f"The loop {' → '.join(loop)} sends nothing: it would keep the enrollment waiting forever.",
        )


@dataclass
class CompiledStep:
    id: str
    type: str
    index: int
    raw: dict
    next_id: str = ""  # the step after this one in list order ("" at the end)
    duration: timedelta | None = None
    timeout: timedelta | None = None
    expires_after: timedelta | None = None


@dataclass
class CompiledDefinition:
    steps: dict[str, CompiledStep]
    first: str
    goal_event: str = ""
    goal_within: timedelta | None = None
    trigger_event: str = ""
    holdout_share: Decimal = Decimal(0)


def _compiled_duration(step_id: str, field_: str, value: Any) -> timedelta | None:
    if not value:
        return None
    parsed = duration_parse(value)
    if parsed is None:
        raise ValueError(
            f"step {step_id!r}: {field_} {value!r} is not a duration this version can run "
            f"(ISO 8601, at most {limits.duration_iso(limits.MAX_DURATION)})"
        )
    return parsed


def definition_compile(definition: dict) -> CompiledDefinition:
    """The form the scheduler walks: steps by id with parsed durations. Raises ValueError for a stored
    definition that validation would refuse today (e.g. a wait longer than the documented bound)."""
    raw_steps = definition["steps"]
    steps = {}
    for i, s in enumerate(raw_steps):
        steps[s["id"]] = CompiledStep(
            id=s["id"],
            type=s["type"],
            index=i,
            raw=s,
            next_id=raw_steps[i + 1]["id"] if i + 1 < len(raw_steps) else "",
            duration=_compiled_duration(s["id"], "duration", s.get("duration")),
            timeout=_compiled_duration(s["id"], "timeout", s.get("timeout")),
            expires_after=_compiled_duration(s["id"], "expires_after", s.get("expires_after")),
        )
    goal = definition.get("goal") or {}
    return CompiledDefinition(
        steps=steps,
        first=raw_steps[0]["id"],
        goal_event=goal.get("event", "") or "",
        goal_within=_compiled_duration("", "goal.within", goal.get("within")),
        trigger_event=(definition.get("trigger") or {}).get("event", "") or "",
        holdout_share=holdout_share(definition) or Decimal(0),
    )


def step_describe(step: dict) -> str:
    """One plain line per step for the admin and the report."""
    kind = step.get("type")
    if kind == "send" and step.get("template"):
        channel = step.get("channel")
        channel = "the next best channel" if channel == AUTO_CHANNEL else channel
        return f"Send on {channel} ({step.get('purpose', 'engagement')}): template {step['template']}"
    if kind == "send":
        content = step.get("content") or {}
        head = content.get("subject") or content.get("title") or ""
        body = content.get("body") or ""
        preview = f"{head} — {body}" if head and body else head or body
        if len(preview) > 90:
            preview = preview[:89] + "…"
        channel = step.get("channel")
        channel = "the next best channel" if channel == AUTO_CHANNEL else channel
        return f"Send on {channel} ({step.get('purpose', 'engagement')}): “{preview}”"
    if kind == "wait":
        d = duration_parse(step.get("duration"))
        return f"Wait {duration_format(d) if d else step.get('duration')}"
    if kind == "wait_for_event":
        t = duration_parse(step.get("timeout"))
        then = "exit" if step.get("on_timeout") == "exit" else "go on"
        limit = duration_format(t) if t else step.get("timeout")
        return f"Wait for {step.get('event')} (at most {limit}, then {then})"
    if kind == "branch":
        cond = step.get("if")
        if isinstance(cond, dict):
            cond = f"{cond.get('attribute')} = {cond.get('equals')!r}"
        elif cond == "engaged":
            cond = "the previous send was opened or clicked"
        elif cond == "converted":
            cond = "the recipient converted"
        return f"If {cond}: go to {step.get('then')}, else {step.get('else') or 'the next step'}"
    if kind == "exit":
        return "Exit"
    return str(kind)
