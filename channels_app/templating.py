"""Liquid templates (python-liquid): one content, a variant per locale, rendered per recipient.

Variables: `recipient` (external_id, locale, timezone, attributes), `data` (what the sender passes),
`event` (name, properties, occurred_at: the triggering event), `journey` (slug, name, step) and
`campaign` (id, name). Nothing else exists: no include/render tags, no attribute access on Python
objects (python-liquid only indexes mappings and sequences), bounded loops, output and nesting.

Strict at authoring time: a syntax error, an unknown variable root or filter, or a path into `__dunder__`
names is refused with the template, locale, field, line and reason; every variant is then rendered with
sample values and linted against its channel. Safe at send time: a missing value renders its `default`
or refuses that one message with a reason (never a crash, never half-rendered text); a reach for a
Python `__dunder__` name renders nothing and is reported.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

import orjson
from django.db import connection
from liquid import Environment, StrictDefaultUndefined, Undefined
from liquid.exceptions import LiquidError, ResourceLimitError, UndefinedError

from orchestrator.db import ids_in

from .lint import Severity, message_lint
from .models import TEMPLATE_FIELDS, MessageTemplate

logger = logging.getLogger(__name__)

ROOTS = {
    "recipient": {"external_id", "locale", "timezone", "attributes"},
    "data": None,  # anything the sender passes
    "event": {"name", "properties", "occurred_at"},
    "journey": {"slug", "name", "step"},
    "campaign": {"id", "name"},
}
MAX_SOURCE = 20_000  # characters of Liquid per field
MAX_LOCALES = 50
LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$")

_sandbox_hits: ContextVar[list[str] | None] = ContextVar("liquid_sandbox_hits", default=None)


def _private(path: str) -> bool:
    return any(part.startswith("__") for part in re.split(r"[.\[\]'\"]+", path) if part)


def _undefined(name: str, *, token=None, obj=None, hint: str | None = None, **kwargs):
    """Send-time undefined: strict (its `default` applies, else the message is refused), except a reach
    for a private name, which renders nothing and is reported."""
    path = hint or str(name)
    if _private(path):
        hits = _sandbox_hits.get()
        if hits is not None:
            hits.append(path.removesuffix(" is undefined"))
        return Undefined(name, token=token, hint=hint)
    return StrictDefaultUndefined(name, token=token, hint=hint)


class SandboxedEnvironment(Environment):
    """Liquid without partials and with bounded work: the limits are the sandbox."""

    loop_iteration_limit = 1_000
    output_stream_limit = 100_000
    local_namespace_limit = 20_000
    context_depth_limit = 10
    block_nesting_limit = 20

    def __init__(self) -> None:
        super().__init__(undefined=_undefined)  # type: ignore[arg-type]
        for tag in ("include", "render"):
            self.tags.pop(tag, None)


ENV = SandboxedEnvironment()


# ---- locales ---------------------------------------------------------------------------------------


def locale_normalize(tag: str) -> str:
    """`pt_br` → `pt-BR`, `EN` → `en`, `zh-hant-tw` → `zh-Hant-TW` (BCP 47 casing)."""
    parts = re.split(r"[-_]", (tag or "").strip())
    if not parts or not parts[0]:
        return ""
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif len(part) in (2, 3):
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


def locale_choose(*, wanted: str, available: Iterable[str], default: str) -> str:
    """The variant for a recipient's locale: exact, then shorter (`pt-BR` → `pt`), else the default."""
    by_key = {locale_normalize(a).lower(): a for a in available}
    tag = locale_normalize(wanted).lower()
    while tag:
        if tag in by_key:
            return by_key[tag]
        tag = tag.rpartition("-")[0]
    return default


# ---- compiled templates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledTemplate:
    """A template's variants parsed once: {locale: {field: BoundTemplate}}."""

    id: int
    key: str
    channel: str
    purpose: str
    default_locale: str
    revision: int
    variants: dict[str, dict[str, Any]]
    sources: dict[str, dict[str, str]]
    # {locale: {field: the variable paths it reads, or None when a path is dynamic}}: a render depends
    # only on the values found along these paths, so a batch renders each distinct set of them once.
    reads: dict[str, dict[str, tuple[tuple[str | int, ...], ...] | None]] = field(default_factory=dict)
    # {locale: every path its fields read, or None}: the memo key of a whole variant.
    variant_reads: dict[str, tuple[tuple[str | int, ...], ...] | None] = field(default_factory=dict)
    # The variant each recipient locale gets, worked out once per compiled template.
    _locales: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def locale_for(self, wanted: str) -> str:
        chosen = self._locales.get(wanted)
        if chosen is None:
            chosen = self._locales[wanted] = locale_choose(
                wanted=wanted, available=self.variants, default=self.default_locale
            )
        return chosen


_cache: OrderedDict[tuple[int, int], CompiledTemplate] = OrderedDict()
_cache_lock = Lock()
CACHE_SIZE = 256


def _reads(bound) -> tuple[tuple[str | int, ...], ...] | None:
    paths = []
    for variables in bound.analyze().globals.values():
        for var in variables:
            if not all(isinstance(s, str | int) for s in var.segments):
                return None  # a path computed at render time (data[recipient.locale]): not memoised
            paths.append(tuple(var.segments))
    return tuple(sorted(set(paths), key=repr))


def _union(reads: Iterable[tuple | None]) -> tuple | None:
    paths: set = set()
    for r in reads:
        if r is None:
            return None
        paths.update(r)
    return tuple(sorted(paths, key=repr))


def _compile(template: MessageTemplate, variants: Iterable) -> CompiledTemplate:
    parsed, sources, reads = {}, {}, {}
    for v in variants:
        fields = {name: getattr(v, name) for name in TEMPLATE_FIELDS if getattr(v, name)}
        sources[v.locale] = fields
        parsed[v.locale] = {
            name: ENV.from_string(src, name=f"{template.key}/{v.locale}/{name}")
            for name, src in fields.items()
        }
        reads[v.locale] = {name: _reads(bound) for name, bound in parsed[v.locale].items()}
    return CompiledTemplate(
        reads=reads,
        variant_reads={loc: _union(fields.values()) for loc, fields in reads.items()},
        id=template.pk,
        key=template.key,
        channel=template.channel,
        purpose=template.purpose,
        default_locale=template.default_locale,
        revision=template.revision,
        variants=parsed,
        sources=sources,
    )


def templates_compiled(*, keys: Iterable[str]) -> dict[str, CompiledTemplate]:
    """Compiled templates by key: one query for the revisions, variants loaded and parsed only for what
    this process has not compiled at that revision yet (a batch renders each template from one parse)."""
    keys = set(keys)
    if not keys:
        return {}
    from .models import TemplateVariant

    found: dict[str, CompiledTemplate] = {}
    stale: list[MessageTemplate] = []
    for template in MessageTemplate.objects.filter(key__in=keys):
        with _cache_lock:
            compiled = _cache.get((template.pk, template.revision))
            if compiled is not None:
                _cache.move_to_end((template.pk, template.revision))
        if compiled is None:
            stale.append(template)
        else:
            found[template.key] = compiled
    if stale:
        variants: dict[int, list] = {t.pk: [] for t in stale}
        for v in TemplateVariant.objects.filter(template_id__in=variants).order_by("locale"):
            variants[v.template_id].append(v)
        for template in stale:
            compiled = _compile(template, variants[template.pk])
            with _cache_lock:
                _cache[(template.pk, template.revision)] = compiled
                while len(_cache) > CACHE_SIZE:
                    _cache.popitem(last=False)
            found[template.key] = compiled
    return found


# ---- rendering -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderProblem:
    """Why one rendering failed (or a sandbox report): where, and in plain words."""

    template: str
    locale: str
    field: str
    line: int | None
    code: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "locale": self.locale,
            "field": self.field,
            "line": self.line,
            "code": self.code,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        line = f" line {self.line}" if self.line else ""
        return f"template {self.template} ({self.locale}) {self.field}{line}: {self.reason}"


@dataclass
class Rendered:
    template: str
    locale: str
    content: dict[str, str] = field(default_factory=dict)
    problem: RenderProblem | None = None
    sandbox: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def _line(exc: LiquidError, source: str | None = None) -> int | None:
    """The error's line; an error found at the end of the text (an unclosed block) has no position of
    its own, so it is reported on the last line."""
    try:
        ctx = exc.context()
    except ValueError:
        ctx = None
    if ctx:
        return ctx[0]
    return max(1, len(source.splitlines())) if source else None


def _problem_code(exc: Exception) -> str:
    if isinstance(exc, UndefinedError):
        return "template_missing_value"
    if isinstance(exc, ResourceLimitError):
        return "template_limit"
    return "template_error"


def _message(exc: Exception) -> str:
    text = exc.message if isinstance(exc, LiquidError) else str(exc)
    return str(text or type(exc).__name__)


def recipient_context(
    *, external_id: str, locale: str, timezone: str, attributes: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "locale": locale,
        "timezone": timezone,
        "attributes": dict(attributes or {}),
    }


_MISSING = ("missing",)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _frozen(value: Any) -> Any:
    """A hashable, type-exact form of a JSON-like value (True and 1 stay apart)."""
    kind = type(value)
    if kind in _SCALARS:  # the common case, without the ABC checks below
        return (kind.__name__, value)
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("list", tuple(_frozen(v) for v in value))
    return (
        type(value).__name__,
        value if isinstance(value, str | int | float | bool | None) else repr(value),
    )


def _read_key(context: Mapping[str, Any], path: tuple) -> Any:
    """The value at the deepest part of `path` present in the context (Liquid derives the rest, such
    as `.size`, from it), with how deep that was."""
    node: Any = context
    for depth, segment in enumerate(path):
        # A plain dict first: the common case, without the ABC checks.
        if (
            (type(node) is dict and segment in node)
            or isinstance(node, Mapping)
            and segment in node
            or (
                isinstance(node, list | tuple)
                and isinstance(segment, int)
                and -len(node) <= segment < len(node)
            )
        ):
            node = node[segment]
        else:
            return (depth, _frozen(node) if depth else _MISSING)
    return (len(path), _frozen(node))


class RenderMemo:
    """Renderings of one batch by (template revision, locale, values the variant reads): many recipients
    with the same first name get one Liquid rendering. Scope it to one batch (one `at`)."""

    def __init__(self) -> None:
        self.entries: dict[tuple, Rendered] = {}
        self.hits = 0


def content_render(
    *,
    compiled: CompiledTemplate,
    recipient: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    event: Mapping[str, Any] | None = None,
    journey: Mapping[str, Any] | None = None,
    campaign: Mapping[str, Any] | None = None,
    locale: str | None = None,
    memo: RenderMemo | None = None,
) -> Rendered:
    """Render every field of the variant for this recipient's locale (or `locale`). Never raises: a
    failure comes back as `problem` with the field, line and reason. With a `memo`, recipients whose
    values read by the variant are the same share one rendering (and one content object)."""
    chosen = compiled.locale_for(locale if locale is not None else str(recipient.get("locale") or ""))
    variant = compiled.variants.get(chosen)
    if variant is None:
        problem = RenderProblem(
            compiled.key, chosen, "", None, "template_no_variant", f"the template has no {chosen} variant"
        )
        return Rendered(template=compiled.key, locale=chosen, problem=problem)
    # Liquid never writes into its inputs (assign and capture write locals), so no copies are needed.
    context = {
        "recipient": recipient,
        "data": data or {},
        "event": event or {},
        "journey": journey or {},
        "campaign": campaign or {},
    }
    key = None
    reads = compiled.variant_reads.get(chosen)
    if memo is not None and reads is not None:
        key = (compiled.id, compiled.revision, chosen, tuple(_read_key(context, p) for p in reads))
        cached = memo.entries.get(key)
        if cached is not None:
            memo.hits += 1
            return Rendered(compiled.key, chosen, cached.content, cached.problem, cached.sandbox)
    result = Rendered(template=compiled.key, locale=chosen)
    sandbox: set[str] = set()
    for name, bound in variant.items():
        text, problem, hits = _field_render(compiled, chosen, name, bound, context)
        sandbox.update(hits)
        if problem is not None:
            result.problem, result.content = problem, {}
            break
        if text:
            result.content[name] = text
    result.sandbox = sorted(sandbox)
    if key is not None:
        memo.entries[key] = result
    return result


def _field_render(
    compiled: CompiledTemplate, locale: str, name: str, bound, context: dict
) -> tuple[str, RenderProblem | None, tuple[str, ...]]:
    hits: list[str] = []
    token = _sandbox_hits.set(hits)
    try:
        text = bound.render(**context).strip()
        if "\x00" in text:  # no text field may hold one (PostgreSQL refuses it); say so instead of failing
            problem = RenderProblem(
                compiled.key, locale, name, None, "template_nul", "the rendered text contains a NUL character"
            )
            return "", problem, tuple(hits)
        return text, None, tuple(hits)
    except LiquidError as exc:
        problem = RenderProblem(compiled.key, locale, name, _line(exc), _problem_code(exc), _message(exc))
        return "", problem, tuple(hits)
    except Exception as exc:  # a filter's own bug must not take the pipeline down
        logger.exception("template %s (%s) %s failed to render", compiled.key, locale, name)
        return (
            "",
            RenderProblem(compiled.key, locale, name, None, "template_error", _message(exc)),
            tuple(hits),
        )
    finally:
        _sandbox_hits.reset(token)


# ---- authoring -------------------------------------------------------------------------------------


class TemplateInvalid(Exception):
    """The template cannot be saved: every problem with its template, locale, field, line and reason."""

    def __init__(self, problems: list[RenderProblem], field_errors: Mapping[str, list[str]] | None = None):
        self.problems = problems
        self.field_errors = dict(field_errors or {})
        super().__init__("; ".join([*(str(p) for p in problems), *self._flat_fields()]))

    def _flat_fields(self) -> list[str]:
        return [f"{k}: {' '.join(v)}" for k, v in self.field_errors.items()]

    def as_response(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.field_errors)
        if self.problems:
            body["locales"] = [str(p) for p in self.problems]
            body["errors"] = [p.as_dict() for p in self.problems]
        body["code"] = "invalid_template"
        body["detail"] = str(self)
        return body


def _set_path(tree: dict, segments: list, value: Any) -> None:
    node = tree
    for seg in segments[:-1]:
        key = str(seg)
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    last = str(segments[-1])
    if last not in node:
        node[last] = value


def _sample_context(paths: Iterable[list], *, key: str, locale: str) -> dict[str, dict]:
    """Sample values for every variable the template reads (the lint needs realistic text to judge)."""
    context: dict[str, dict] = {root: {} for root in ROOTS}
    context["recipient"].update(external_id="sample-recipient", locale=locale, timezone="UTC", attributes={})
    context["journey"].update(slug="sample-journey", name="Sample journey", step="step")
    context["campaign"].update(id=1, name="Sample campaign")
    for segments in paths:
        if len(segments) > 1 and all(isinstance(s, str | int) for s in segments):
            _set_path(context, list(segments), str(segments[-1]).replace("_", " "))
    return context


def _static_problems(key: str, locale: str, name: str, bound, source: str) -> list[RenderProblem]:
    """Unknown variable roots and fields, dunder paths and unknown filters, each with its line."""
    problems: list[RenderProblem] = []
    analysis = bound.analyze()

    def report(span, code: str, reason: str) -> None:
        try:
            line = span.line_col(source)[0]
        except ValueError:
            line = None
        problems.append(RenderProblem(key, locale, name, line, code, reason))

    for root, variables in analysis.globals.items():
        for var in variables:
            segments = [str(s) for s in var.segments]
            dotted = ".".join(segments)
            if _private(dotted):
                report(var.span, "template_sandbox", f"{dotted} is outside the context")
            elif root not in ROOTS:
                hint = (
                    f" (did you mean recipient.attributes.{root} or data.{root}?)"
                    if len(segments) == 1
                    else ""
                )
                reason = f"'{root}' is undefined: variables come from {', '.join(ROOTS)}{hint}"
                report(var.span, "template_undefined", reason)
            elif ROOTS[root] is not None and len(segments) > 1 and segments[1] not in ROOTS[root]:
                reason = f"'{root}.{segments[1]}' is undefined: {root} has {', '.join(sorted(ROOTS[root]))}"
                report(var.span, "template_undefined", reason)
    for filter_name, spans in analysis.filters.items():
        if filter_name not in ENV.filters:
            report(spans[0], "template_unknown_filter", f"unknown filter '{filter_name}'")
    return problems


@dataclass(frozen=True)
class VariantPreview:
    locale: str
    content: dict[str, str]
    lint: list[dict[str, str]]


def template_definition_validate(
    *,
    key: str,
    channel: str,
    purpose: str,
    default_locale: str,
    locales: Mapping[str, Mapping[str, Any]],
) -> list[VariantPreview]:
    """Parse, check and lint every variant (rendered with sample values). Raises TemplateInvalid with the
    template, locale, field, line and reason of each problem; returns each variant's sample rendering."""
    from orchestrator.models import AUTO_CHANNEL, Channel, Purpose

    field_errors: dict[str, list[str]] = {}
    if channel not in (*Channel.values, AUTO_CHANNEL):
        field_errors["channel"] = [f"channel is one of {', '.join(Channel.values)} or auto."]
    if purpose and purpose not in Purpose.values:
        field_errors["purpose"] = [f"purpose is one of {', '.join(Purpose.values)} (or blank)."]
    if not isinstance(locales, Mapping) or not locales:
        field_errors["locales"] = ['locales maps a locale to its content: {"en": {"body": "..."}}.']
        raise TemplateInvalid([], field_errors)
    if len(locales) > MAX_LOCALES:
        field_errors["locales"] = [f"at most {MAX_LOCALES} locales."]
        raise TemplateInvalid([], field_errors)
    normalized = {}
    for tag, content in locales.items():
        if not isinstance(tag, str) or not LOCALE_RE.match(tag):
            field_errors.setdefault("locales", []).append(
                f"{str(tag)[:40]!r} is not a locale tag (en, pt-BR)."
            )
            continue
        loc = locale_normalize(tag)
        if loc in normalized:
            field_errors.setdefault("locales", []).append(f"{tag} appears twice.")
            continue
        if not isinstance(content, Mapping):
            field_errors[f"locales.{tag}"] = ["expected {subject?, title?, body, action_url?}."]
            continue
        bad = [str(k)[:40] for k in content if k not in TEMPLATE_FIELDS]
        if bad:
            field_errors[f"locales.{tag}"] = [
                f"unknown field {', '.join(bad)}; a variant has {', '.join(TEMPLATE_FIELDS)}."
            ]
            continue
        for name, value in content.items():
            if not isinstance(value, str):
                field_errors[f"locales.{tag}.{name}"] = ["expected text (Liquid)."]
            elif len(value) > MAX_SOURCE:
                field_errors[f"locales.{tag}.{name}"] = [f"at most {MAX_SOURCE} characters."]
            elif "\x00" in value:
                field_errors[f"locales.{tag}.{name}"] = ["text may not contain NUL characters."]
        if not any(isinstance(v, str) and v.strip() for v in content.values()):
            field_errors[f"locales.{tag}"] = ["a variant needs some content (at least a body)."]
        normalized[loc] = dict(content)
    default = locale_normalize(default_locale) if isinstance(default_locale, str) else ""
    if not default or default not in normalized:
        field_errors["default_locale"] = [
            f"default_locale must be one of the locales ({', '.join(normalized) or 'none given'})."
        ]
    if field_errors:
        raise TemplateInvalid([], field_errors)

    problems: list[RenderProblem] = []
    previews: list[VariantPreview] = []
    lint_purpose = purpose or Purpose.TRANSACTIONAL
    for loc, content in normalized.items():
        bound_fields, paths = {}, []
        for name, source in content.items():
            if not source:
                continue
            try:
                bound = ENV.from_string(source, name=f"{key}/{loc}/{name}")
            except LiquidError as exc:
                line = _line(exc, source)
                problems.append(RenderProblem(key, loc, name, line, "template_syntax", _message(exc)))
                continue
            found = _static_problems(key, loc, name, bound, source)
            problems.extend(found)
            if not found:
                bound_fields[name] = bound
                paths.extend(var.segments for vs in bound.analyze().globals.values() for var in vs)
        if len(bound_fields) != len([s for s in content.values() if s]):
            continue
        context = _sample_context(paths, key=key, locale=loc)
        rendered = {}
        for name, bound in bound_fields.items():
            try:
                text = bound.render(**context).strip()
            except LiquidError as exc:
                problems.append(RenderProblem(key, loc, name, _line(exc), _problem_code(exc), _message(exc)))
                continue
            except Exception as exc:
                problems.append(RenderProblem(key, loc, name, None, "template_error", _message(exc)))
                continue
            if text:
                rendered[name] = text
        violations = message_lint(channel=channel, purpose=lint_purpose, content=rendered)
        for v in violations:
            if v.severity == Severity.BLOCK:
                problems.append(RenderProblem(key, loc, "content", None, v.code, v.reason))
        previews.append(
            VariantPreview(
                loc,
                rendered,
                [{"code": v.code, "severity": str(v.severity), "detail": v.reason} for v in violations],
            )
        )
    if problems:
        raise TemplateInvalid(problems)
    return previews


@dataclass(frozen=True)
class Preview:
    rendered: Rendered
    lint: list[dict[str, str]]


def template_preview(
    *,
    template: MessageTemplate,
    recipient,
    data: Mapping[str, Any] | None = None,
    event: Mapping[str, Any] | None = None,
    channel: str | None = None,
    purpose: str | None = None,
) -> Preview:
    """What this recipient would get: their locale's variant rendered as at send time, with the lint."""
    from orchestrator.models import AUTO_CHANNEL, Purpose

    compiled = templates_compiled(keys=[template.key])[template.key]
    rendered = content_render(
        compiled=compiled,
        recipient=recipient_context(
            external_id=recipient.external_id,
            locale=recipient.locale,
            timezone=recipient.timezone,
            attributes=recipient.attributes,
        ),
        data=data,
        event=event,
    )
    lint: list[dict[str, str]] = []
    channel = channel or template.channel
    if rendered.ok and channel != AUTO_CHANNEL:
        violations = message_lint(
            channel=channel,
            purpose=purpose or template.purpose or Purpose.TRANSACTIONAL,
            content=rendered.content,
        )
        lint = [{"code": v.code, "severity": str(v.severity), "detail": v.reason} for v in violations]
    return Preview(rendered=rendered, lint=lint)


# ---- many at once (the send pipeline's render stage) -------------------------------------------------


@dataclass(frozen=True)
class RenderRequest:
    """One recipient's content from a template: `data` for {{ data.* }}, `context` for the other roots
    (event, journey, campaign)."""

    template: str
    recipient_id: int
    data: Mapping[str, Any] | None = None
    context: Mapping[str, Any] | None = None


_LONG_NUMBER = re.compile(r"\d{19}")


def _json_loads(text: str | bytes) -> Any:
    """orjson (4x the json module); json where orjson would differ: an integer beyond 64 bits, which
    orjson reads as a float (or refuses), stays an exact int."""
    if _LONG_NUMBER.search(text if isinstance(text, str) else text.decode()):
        return json.loads(text)
    return orjson.loads(text)


def contents_render_bulk(
    *, items: Sequence[RenderRequest], recipients: Mapping[int, Any] | None = None
) -> list[Rendered]:
    """Render many recipients' content, set-based: one query for the templates (parsed once per process
    and revision), one for the recipients' locale, zone and attributes, and each distinct set of values
    a template reads rendered once. Identical results share one content object (the pipeline lints and
    stores each distinct content once). Never raises: failures come back as `problem`."""
    from orchestrator.models import Recipient

    compiled = templates_compiled(keys={i.template for i in items})
    known: dict[int, dict[str, Any]] = {}
    for pk, r in (recipients or {}).items():
        known[pk] = recipient_context(
            external_id=r.external_id, locale=r.locale, timezone=r.timezone, attributes=r.attributes
        )
    wanted = sorted({i.recipient_id for i in items} - set(known))
    if wanted:
        # Plain SQL with one array parameter: the ORM spent longer building a 1000-item IN than the query.
        where, params = ids_in("id", wanted)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, external_id, locale, timezone, attributes FROM {Recipient._meta.db_table}"
                f" WHERE {where}",
                params,
            )
            for pk, external_id, locale, zone, attributes in cursor.fetchall():
                if isinstance(attributes, str | bytes):
                    attributes = _json_loads(attributes)
                known[pk] = recipient_context(
                    external_id=external_id, locale=locale, timezone=zone, attributes=attributes
                )
    memo = RenderMemo()
    shared: dict[tuple, dict[str, str]] = {}
    out: list[Rendered] = []
    for item in items:
        template = compiled.get(item.template)
        recipient = known.get(item.recipient_id)
        if template is None or recipient is None:
            missing = "template" if template is None else "recipient"
            reason = f"there is no template {item.template!r}" if template is None else "unknown recipient"
            out.append(
                Rendered(
                    item.template,
                    "",
                    problem=RenderProblem(item.template, "", "", None, f"unknown_{missing}", reason),
                )
            )
            continue
        extra = item.context or {}
        hits = memo.hits
        rendered = content_render(
            compiled=template,
            recipient=recipient,
            data=item.data,
            event=extra.get("event"),
            journey=extra.get("journey"),
            campaign=extra.get("campaign"),
            memo=memo,
        )
        if rendered.problem is None and memo.hits == hits:
            # A fresh rendering (a memo hit already shares its entry's content): identical results share
            # one object, whatever produced them.
            rendered.content = shared.setdefault(tuple(rendered.content.items()), rendered.content)
        out.append(rendered)
    return out
