"""The journey step builder of the admin: forms for the journey and each step, their translation to and
from the definition JSON of CONTRACT.md, and the per-step check (channel lint + definition validation)
shown live beside each step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django import forms

from channels_app.lint import Severity, message_lint
from orchestrator.authority import channels_text, user_channels
from orchestrator.models import AUTO_CHANNEL, Channel, Purpose

from .definition import STEP_TYPES, DefinitionInvalid, definition_validate, duration_parse
from .models import ReentryPolicy

UNITS = [("minutes", "minutes"), ("hours", "hours"), ("days", "days")]
UNIT_SECONDS = {"minutes": 60, "hours": 3600, "days": 86400}
STEP_TYPE_LABELS = {
    "send": "Send a message",
    "wait": "Wait",
    "wait_for_event": "Wait for an event",
    "branch": "Branch",
    "exit": "Exit",
}
CONDITIONS = [
    ("converted", "the recipient converted"),
    ("engaged", "the previous send was opened or clicked"),
    ("attribute", "a recipient attribute equals a value"),
]


def duration_iso(amount: int | None, unit: str) -> str | None:
    if amount is None:
        return None
    seconds = amount * UNIT_SECONDS.get(unit, 3600)
    if seconds % 86400 == 0:
        return f"P{seconds // 86400}D"
    if seconds % 3600 == 0:
        return f"PT{seconds // 3600}H"
    return f"PT{seconds // 60}M"


def duration_split(value: Any) -> tuple[int | None, str]:
    """'PT2H' → (2, 'hours'): the largest unit that divides it."""
    parsed = duration_parse(value) if value else None
    if parsed is None:
        return None, "hours"
    seconds = int(parsed.total_seconds())
    for unit in ("days", "hours", "minutes"):
        if seconds and seconds % UNIT_SECONDS[unit] == 0:
            return seconds // UNIT_SECONDS[unit], unit
    return max(1, seconds // 60), "minutes"


def _amount(label: str, help_text: str = "") -> forms.IntegerField:
    return forms.IntegerField(
        label=label, required=False, min_value=1, max_value=100_000, help_text=help_text
    )


def _unit() -> forms.ChoiceField:
    return forms.ChoiceField(choices=UNITS, required=False, initial="hours", label="")


class JourneyForm(forms.Form):
    """The journey as a whole: identity, trigger, goal and re-entry."""

    slug = forms.SlugField(max_length=100, help_text="Its id in the API and reports, e.g. cart-recovery.")
    name = forms.CharField(max_length=200)
    owner_channel = forms.ChoiceField(required=False, help_text="The team that owns it.")
    trigger_event = forms.CharField(
        max_length=200,
        required=False,
        help_text="A product event that enrolls the recipient (blank: API only).",
    )
    goal_event = forms.CharField(
        max_length=200, required=False, help_text="The event that counts as converting (it ends the journey)."
    )
    goal_within_amount = _amount("Goal within")
    goal_within_unit = _unit()
    reentry = forms.ChoiceField(choices=ReentryPolicy.choices, initial=ReentryPolicy.AFTER_EXIT)
    cooldown_amount = _amount("Cool-down", "With a cool-down: how long before re-entry.")
    cooldown_unit = _unit()

    def __init__(self, *args, user=None, fixed_slug: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        allowed = user_channels(user)
        choices = [(c, label) for c, label in Channel.choices if allowed is None or c in allowed]
        self.fields["owner_channel"].choices = [("", "—"), *choices]
        if fixed_slug is not None:
            self.fields["slug"].disabled = True
            self.fields["slug"].required = False
            self.initial["slug"] = fixed_slug

    def definition_part(self) -> dict[str, Any]:
        d = self.cleaned_data
        part: dict[str, Any] = {"slug": d.get("slug") or self.initial.get("slug"), "name": d.get("name", "")}
        if d.get("owner_channel"):
            part["owner_channel"] = d["owner_channel"]
        if d.get("trigger_event"):
            part["trigger"] = {"event": d["trigger_event"].strip()}
        if d.get("goal_event"):
            part["goal"] = {"event": d["goal_event"].strip()}
            within = duration_iso(d.get("goal_within_amount"), d.get("goal_within_unit") or "days")
            if within:
                part["goal"]["within"] = within
        if d.get("reentry"):
            part["reentry"] = {"policy": d["reentry"]}
            if d["reentry"] == ReentryPolicy.COOLDOWN:
                cooldown = duration_iso(d.get("cooldown_amount"), d.get("cooldown_unit") or "days")
                if cooldown:
                    part["reentry"]["cooldown"] = cooldown
        return part

    @staticmethod
    def initial_from(definition: dict[str, Any]) -> dict[str, Any]:
        goal = definition.get("goal") or {}
        reentry = definition.get("reentry") or {}
        within, within_unit = duration_split(goal.get("within"))
        cooldown, cooldown_unit = duration_split(reentry.get("cooldown"))
        return {
            "slug": definition.get("slug", ""),
            "name": definition.get("name", ""),
            "owner_channel": definition.get("owner_channel", ""),
            "trigger_event": (definition.get("trigger") or {}).get("event", ""),
            "goal_event": goal.get("event", ""),
            "goal_within_amount": within,
            "goal_within_unit": within_unit if within else "days",
            "reentry": reentry.get("policy", ReentryPolicy.AFTER_EXIT),
            "cooldown_amount": cooldown,
            "cooldown_unit": cooldown_unit if cooldown else "days",
        }


class StepForm(forms.Form):
    """One step; the fields that matter depend on its type (the page shows only those)."""

    position = forms.IntegerField(widget=forms.HiddenInput, required=False)
    id = forms.CharField(max_length=100, label="Step id", help_text="Short and unique, e.g. nudge.")
    type = forms.ChoiceField(choices=[(t, STEP_TYPE_LABELS[t]) for t in STEP_TYPES])
    # send
    channel = forms.ChoiceField(
        choices=[*Channel.choices, (AUTO_CHANNEL, "Next best channel (auto)")], required=False
    )
    purpose = forms.ChoiceField(choices=Purpose.choices, initial=Purpose.ENGAGEMENT, required=False)
    subject = forms.CharField(max_length=500, required=False, help_text="Email: the subject line.")
    title = forms.CharField(max_length=500, required=False, help_text="Push and in-app: the title.")
    body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    action_url = forms.CharField(max_length=1000, required=False, help_text="Where a tap or click leads.")
    on_suppressed = forms.ChoiceField(
        choices=[("continue", "go on to the next step"), ("exit", "end the journey")],
        required=False,
        label="If the governor stops it",
    )
    # wait
    wait_amount = _amount("Wait for")
    wait_unit = _unit()
    # wait_for_event
    event = forms.CharField(max_length=200, required=False, help_text="e.g. app_open")
    timeout_amount = _amount("At most")
    timeout_unit = _unit()
    on_timeout = forms.ChoiceField(
        choices=[("continue", "go on"), ("exit", "end the journey")], required=False, label="Then"
    )
    # branch
    condition = forms.ChoiceField(choices=CONDITIONS, required=False, label="If")
    attribute = forms.CharField(max_length=200, required=False)
    equals = forms.CharField(max_length=500, required=False)
    then = forms.CharField(max_length=100, required=False, label="Go to step", help_text="A step id.")
    otherwise = forms.CharField(
        max_length=100, required=False, label="Else go to", help_text="Blank: the next step."
    )

    def step(self) -> dict[str, Any] | None:
        """The definition step this form describes (None when it is marked for deletion)."""
        d = self.cleaned_data
        if not d or d.get("DELETE"):
            return None
        kind = d.get("type")
        step: dict[str, Any] = {"id": (d.get("id") or "").strip(), "type": kind}
        if kind == "send":
            content = {k: d[k] for k in ("subject", "title", "body", "action_url") if d.get(k)}
            step |= {
                "channel": d.get("channel"),
                "purpose": d.get("purpose") or "engagement",
                "content": content,
            }
            if d.get("on_suppressed") == "exit":
                step["on_suppressed"] = "exit"
        elif kind == "wait":
            step["duration"] = duration_iso(d.get("wait_amount"), d.get("wait_unit") or "hours")
        elif kind == "wait_for_event":
            step |= {
                "event": (d.get("event") or "").strip(),
                "timeout": duration_iso(d.get("timeout_amount"), d.get("timeout_unit") or "days"),
            }
            if d.get("on_timeout") == "exit":
                step["on_timeout"] = "exit"
        elif kind == "branch":
            cond = d.get("condition") or "converted"
            step["if"] = (
                {"attribute": d.get("attribute", ""), "equals": d.get("equals", "")}
                if (cond == "attribute")
                else cond
            )
            step["then"] = (d.get("then") or "").strip()
            if d.get("otherwise"):
                step["else"] = d["otherwise"].strip()
        return {k: v for k, v in step.items() if v is not None}

    @staticmethod
    def initial_from(step: dict[str, Any], position: int) -> dict[str, Any]:
        content = step.get("content") or {}
        wait, wait_unit = duration_split(step.get("duration"))
        timeout, timeout_unit = duration_split(step.get("timeout"))
        cond = step.get("if")
        initial = {
            "position": position,
            "id": step.get("id", ""),
            "type": step.get("type", "send"),
            "channel": step.get("channel", ""),
            "purpose": step.get("purpose", "engagement"),
            "on_suppressed": step.get("on_suppressed", "continue"),
            "wait_amount": wait,
            "wait_unit": wait_unit,
            "event": step.get("event", ""),
            "timeout_amount": timeout,
            "timeout_unit": timeout_unit if timeout else "days",
            "on_timeout": step.get("on_timeout", "continue"),
            "condition": "attribute" if isinstance(cond, dict) else (cond or "converted"),
            "attribute": cond.get("attribute", "") if isinstance(cond, dict) else "",
            "equals": cond.get("equals", "") if isinstance(cond, dict) else "",
            "then": step.get("then", ""),
            "otherwise": step.get("else", ""),
        }
        initial |= {k: content.get(k, "") for k in ("subject", "title", "body", "action_url")}
        return initial


StepFormSet = forms.formset_factory(StepForm, extra=0, can_delete=True, min_num=0, max_num=100)

# Where a definition error lands in the step form (definition field → form field).
STEP_FIELD = {
    "content": "body",
    "duration": "wait_amount",
    "timeout": "timeout_amount",
    "if": "condition",
    "else": "otherwise",
    "on_suppressed": "on_suppressed",
    "on_timeout": "on_timeout",
}
JOURNEY_FIELD = {
    "goal.event": "goal_event",
    "goal.within": "goal_within_amount",
    "trigger": "trigger_event",
    "reentry.policy": "reentry",
    "reentry.cooldown": "cooldown_amount",
    "slug": "slug",
    "name": "name",
    "owner_channel": "owner_channel",
}


@dataclass
class StepCheck:
    """What the page shows beside one step: the lint (block and warn) and the definition's errors."""

    prefix: str
    lint: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not any(v["severity"] == Severity.BLOCK for v in self.lint)


@dataclass
class Built:
    """A builder submission read back: the definition (as far as it could be read) and every problem."""

    definition: dict[str, Any]
    checks: dict[str, StepCheck]
    journey_errors: list[str]
    valid: bool


def builder_read(journey_form: JourneyForm, steps: Any, *, user=None, slug: str | None = None) -> Built:
    """Read the forms into a definition, lint each send, validate the definition and attach every error
    to its field (so the page shows it beside the step and keeps what was typed)."""
    journey_ok = journey_form.is_valid()
    steps_ok = steps.is_valid()
    definition = journey_form.definition_part() if journey_ok else dict(journey_form.initial)
    if slug:
        definition["slug"] = slug
    ordered = []
    for n, form in enumerate(steps.forms):
        if not hasattr(form, "cleaned_data"):
            continue
        position = form.cleaned_data.get("position")
        ordered.append((position if position is not None else n, n, form))
    ordered.sort(key=lambda item: (item[0], item[1]))
    checks: dict[str, StepCheck] = {}
    by_id: dict[str, tuple[Any, StepCheck]] = {}
    step_dicts = []
    allowed = user_channels(user)
    for _, _, form in ordered:
        check = checks.setdefault(form.prefix, StepCheck(form.prefix))
        step = form.step() if form.is_valid() else None
        if step is None:
            continue
        step_dicts.append(step)
        by_id.setdefault(step["id"], (form, check))
        if step["type"] == "send":
            channel = step.get("channel")
            if channel in Channel.values:
                for v in message_lint(channel=channel, purpose=step["purpose"], content=step["content"]):
                    check.lint.append({"code": v.code, "severity": v.severity, "reason": v.reason})
            used = set(Channel.values) if channel == AUTO_CHANNEL else {channel}
            if allowed is not None and channel and not used <= allowed:
                mine = channels_text(allowed) or "no channel"
                text = f"You do not own {channels_text(used - allowed)}; you may send on {mine}."
                form.add_error("channel", text)
                check.errors.append(text)
    definition["steps"] = step_dicts
    journey_errors: list[str] = []
    valid = journey_ok and steps_ok
    try:
        definition_validate(definition, slug=slug)
    except DefinitionInvalid as exc:
        valid = False
        for error in exc.errors:
            target = by_id.get(error.step)
            if target is None and error.step.startswith("#"):
                journey_errors.append(str(error))
                continue
            if target is None:
                name = JOURNEY_FIELD.get(error.field)
                if name and name in journey_form.fields and journey_ok:
                    journey_form.add_error(name, error.reason)
                journey_errors.append(str(error))
                continue
            form, check = target
            lint_codes = {v["code"] for v in check.lint}
            if error.code in lint_codes:
                continue  # shown once, as the lint says it
            name = STEP_FIELD.get(error.field, error.field)
            if name in form.fields and form.is_valid():
                form.add_error(name, error.reason)
            check.errors.append(error.reason)
    if any(not c.ok for c in checks.values()):
        valid = False
    for form in steps.forms:
        check = checks.setdefault(form.prefix, StepCheck(form.prefix))
        for name, errs in (form.errors or {}).items():
            for e in errs:
                text = e if name == "__all__" else f"{form.fields[name].label or name}: {e}"
                if e not in check.errors and text not in check.errors:
                    check.errors.append(text)
    return Built(definition, checks, journey_errors, valid)


def builder_initial(definition: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    steps = [StepForm.initial_from(s, n) for n, s in enumerate(definition.get("steps") or [])]
    return JourneyForm.initial_from(definition), steps


def empty_definition() -> dict[str, Any]:
    return {"slug": "", "name": "", "steps": []}
