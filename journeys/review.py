"""What a reviewer reads about a proposal: a plain-language diff against the live version and the lint of
every send step (blocks and warnings, with the channel's reasons)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from channels_app.lint import message_lint
from orchestrator.models import AUTO_CHANNEL, Channel

from .definition import step_describe

JOURNEY_KEYS = {
    "name": "Name",
    "owner_channel": "Owner channel",
    "trigger": "Trigger",
    "goal": "Goal",
    "reentry": "Re-entry",
}


def _text(value: Any) -> str:
    if value is None or value == "" or value == {}:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value)


def _flat(step: dict[str, Any]) -> dict[str, str]:
    """A step as field → text, content fields lifted (so a body change reads as `body`)."""
    out = {}
    for key, value in step.items():
        if key == "content" and isinstance(value, dict):
            out.update({k: _text(v) for k, v in value.items()})
        elif key != "id":
            out[key] = _text(value)
    return out


@dataclass
class StepChange:
    kind: str  # added, removed, changed, moved, same
    step_id: str
    text: str
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (field, before, after)
    position: str = ""


@dataclass
class Diff:
    first: bool  # no live version: everything is new
    journey: list[tuple[str, str, str]]
    steps: list[StepChange]

    @property
    def changed(self) -> bool:
        return self.first or bool(self.journey) or any(s.kind != "same" for s in self.steps)


def definition_diff(live: dict[str, Any] | None, proposal: dict[str, Any]) -> Diff:
    """Journey fields that changed, then each step: added, removed, changed (field by field) or moved."""
    if live is None:
        return Diff(
            True,
            [],
            [StepChange("added", s.get("id", ""), step_describe(s)) for s in proposal.get("steps") or []],
        )
    journey = [
        (label, _text(live.get(key)), _text(proposal.get(key)))
        for key, label in JOURNEY_KEYS.items()
        if live.get(key) != proposal.get(key)
    ]
    old = {s.get("id"): (n, s) for n, s in enumerate(live.get("steps") or [])}
    new_ids = {s.get("id") for s in proposal.get("steps") or []}
    steps = []
    for n, step in enumerate(proposal.get("steps") or []):
        sid = step.get("id", "")
        if sid not in old:
            steps.append(StepChange("added", sid, step_describe(step)))
            continue
        before_n, before = old[sid]
        a, b = _flat(before), _flat(step)
        fields = [(k, a.get(k, "—"), b.get(k, "—")) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        moved = f"was step {before_n + 1}, now {n + 1}" if before_n != n else ""
        kind = "changed" if fields else ("moved" if moved else "same")
        steps.append(StepChange(kind, sid, step_describe(step), fields, moved))
    for sid, (_, step) in old.items():
        if sid not in new_ids:
            steps.append(StepChange("removed", sid, step_describe(step)))
    return Diff(False, journey, steps)


def definition_lint(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """Every send step's lint on its channel (each channel for `auto`), warnings included."""
    rows = []
    for step in definition.get("steps") or []:
        if step.get("type") != "send":
            continue
        channel = step.get("channel")
        channels = list(Channel.values) if channel == AUTO_CHANNEL else [channel]
        for ch in channels:
            violations = message_lint(
                channel=ch, purpose=step.get("purpose", "engagement"), content=step.get("content") or {}
            )
            rows.append({"step": step.get("id"), "channel": ch, "violations": violations})
    return rows
