"""Providers per channel, in order, with failover and a circuit breaker per provider.

Courier's tiers as the model: a provider has its own timeout (the backend's), a channel tries its
providers in order within one delivery (a transient failure or an open circuit moves on to the next,
within the channel's failover budget; the last provider is always called), and the message keeps its
retry budget across deliveries (`channels_app.delivery`). Delivery only calls `ProviderChain.send`;
it knows nothing of the order, the circuits or the timeouts, so a concurrent delivery loop can reuse
the chain as it is.

Settings: `CHANNELS["BACKENDS"][channel]` is a dotted path (one provider, as before) or a list of
paths or of {"BACKEND", "NAME"?, "TIMEOUT"?, "OPTIONS"?} dicts; `CHANNEL_<X>_BACKENDS` in the
environment lists paths. Circuit knobs: `CHANNELS["CIRCUIT"]`. Per-provider limits (`ProviderLimit`): a dict
entry's "CONCURRENCY" / "RATE_PER_SECOND", else `CHANNELS["LIMITS"][provider name or channel]`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from .backends.base import TRANSIENT, BaseBackend, Outgoing, SendResult
from .models import CircuitState, ProviderCircuit

logger = logging.getLogger(__name__)

CIRCUIT_DEFAULTS = {
    "FAILURES": 5,
    "COOLDOWN": timedelta(seconds=60),
    "FAILOVER_BUDGET": timedelta(seconds=60),
    "HEALTHY_RECHECK": timedelta(seconds=1),
}


def circuit_conf(name: str):
    return settings.CHANNELS.get("CIRCUIT", {}).get(name, CIRCUIT_DEFAULTS[name])


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    path: str
    timeout: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    channel: str = ""
    concurrency: int | None = None
    rate_per_second: float | None = None

    def backend(self) -> BaseBackend:
        backend = import_string(self.path)(**self.options)
        backend.provider_name = self.name
        if self.timeout is not None:
            backend.timeout = self.timeout
        return backend


def providers_for_channel(*, channel: str) -> list[ProviderSpec]:
    """The channel's providers in order, each with a unique name (the record and the circuit key)."""
    entries = settings.CHANNELS["BACKENDS"][channel]
    if isinstance(entries, str | dict):
        entries = [entries]
    specs, seen = [], set()
    for entry in entries:
        if isinstance(entry, str):
            entry = {"BACKEND": entry}
        path = entry["BACKEND"]
        options = dict(entry.get("OPTIONS") or {})
        name = entry.get("NAME") or _default_name(path, options)
        base, n = name, 2
        while name in seen:
            name, n = f"{base}#{n}", n + 1
        seen.add(name)
        limits = settings.CHANNELS.get("LIMITS", {})
        known = limits.get(name[:100]) or limits.get(channel) or {}
        specs.append(
            ProviderSpec(
                name[:100],
                path,
                entry.get("TIMEOUT"),
                options,
                channel,
                entry.get("CONCURRENCY") or known.get("CONCURRENCY") or None,
                entry.get("RATE_PER_SECOND") or known.get("RATE_PER_SECOND") or None,
            )
        )
    return specs


def _default_name(path: str, options: dict[str, Any]) -> str:
    """The backend's own name, or its path when it cannot even be loaded (its sends then fail as
    transient and end in the dead letter, recorded under that name)."""
    try:
        return import_string(path)(**options).name
    except Exception:  # noqa: BLE001 - a misconfigured backend must not lose the message
        logger.exception("cannot load the provider backend %s", path)
        return f"unloadable:{path}"[:100]


# --- the circuit breaker -----------------------------------------------------------------------------


def circuit_allows(*, provider: str, now: datetime) -> tuple[bool, str]:
    """May a call go to this provider now? An open circuit whose retry time came lets exactly one
    caller through (an atomic open → half-open update) and keeps the others out until that trial ends
    or the cooldown passes again."""
    row = ProviderCircuit.objects.filter(provider=provider).values("state", "retry_at").first()
    if row is None or row["state"] == CircuitState.CLOSED:
        return True, ""
    if row["retry_at"] is not None and row["retry_at"] <= now:
        took = ProviderCircuit.objects.filter(
            Q(state=CircuitState.OPEN) | Q(state=CircuitState.HALF_OPEN),
            provider=provider,
            retry_at__lte=now,
        ).update(state=CircuitState.HALF_OPEN, retry_at=now + circuit_conf("COOLDOWN"), updated_at=now)
        if took:
            return True, "trial call after the cooldown"
    until = row["retry_at"]
    return False, f"circuit open until {until:%H:%M:%S} UTC" if until else "circuit open"


# Concurrent delivery (pooled provider calls) skips the "close it if it is not closed" statement for a
# provider this process saw healthy within HEALTHY_RECHECK: at hundreds of calls a second that no-op
# UPDATE was a statement (and a connection per thread) per call. Other callers always write.
_pooled = threading.local()
_healthy_until: dict[str, float] = {}
_healthy_lock = threading.Lock()


@contextmanager
def circuit_checks_cached() -> Iterator[None]:
    """Within this block (a delivery pool thread), healthy-circuit no-op writes are rate-limited."""
    _pooled.cached = True
    try:
        yield
    finally:
        _pooled.cached = False


def circuit_record(*, provider: str, result: SendResult, now: datetime) -> None:
    """Count the provider's answer: a transient failure adds to the failures in a row and opens the
    circuit at CHANNELS["CIRCUIT"]["FAILURES"]; any answer from the provider (success, or a permanent
    refusal of that one message) closes it. A healthy closed circuit costs no write."""
    if result.outcome != TRANSIENT and getattr(_pooled, "cached", False):
        if _healthy_until.get(provider, 0.0) > time.monotonic():
            return
        # One pool thread at a time checks (and opens a connection): not the whole pool at once.
        with _healthy_lock:
            if _healthy_until.get(provider, 0.0) > time.monotonic():
                return
            _circuit_record(provider=provider, result=result, now=now)
        return
    _circuit_record(provider=provider, result=result, now=now)


def _circuit_record(*, provider: str, result: SendResult, now: datetime) -> None:
    if result.outcome == TRANSIENT:
        _healthy_until.pop(provider, None)
        ProviderCircuit.objects.get_or_create(provider=provider, defaults={"updated_at": now})
        ProviderCircuit.objects.filter(provider=provider).update(
            failures=F("failures") + 1, last_error=result.summary[:2000], updated_at=now
        )
        threshold = circuit_conf("FAILURES")
        opened = ProviderCircuit.objects.filter(
            Q(state=CircuitState.HALF_OPEN) | Q(state=CircuitState.CLOSED, failures__gte=threshold),
            provider=provider,
        ).update(state=CircuitState.OPEN, opened_at=now, retry_at=now + circuit_conf("COOLDOWN"))
        if opened:
            logger.warning("circuit opened for provider %s: %s", provider, result.summary)
        return
    closed = ProviderCircuit.objects.filter(
        ~Q(state=CircuitState.CLOSED) | Q(failures__gt=0), provider=provider
    ).update(state=CircuitState.CLOSED, failures=0, retry_at=None, last_success_at=now, updated_at=now)
    if not closed:
        _healthy_until[provider] = time.monotonic() + circuit_conf("HEALTHY_RECHECK").total_seconds()


def circuit_close(*, provider: str, now: datetime) -> int:
    """An operator closes a circuit by hand (the provider is back)."""
    return ProviderCircuit.objects.filter(provider=provider).update(
        state=CircuitState.CLOSED, failures=0, retry_at=None, updated_at=now
    )


# --- the chain ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderTry:
    provider: str
    result: SendResult
    started_at: datetime
    finished_at: datetime


@dataclass
class ChainOutcome:
    """What one delivery got: the deciding result and provider, every provider call, every skip."""

    result: SendResult
    provider: str
    tries: list[ProviderTry]
    skipped: list[str]


class ProviderChain:
    """A channel's providers in order. `send` tries them until one answers with success or a permanent
    refusal; transient failures and open circuits move on to the next (the last is always called, so
    every delivery makes at least one provider call and the retry budget counts real calls)."""

    def __init__(self, *, channel: str):
        self.channel = channel
        self.specs = providers_for_channel(channel=channel)
        self._backends: dict[str, BaseBackend] = {}

    @property
    def first(self) -> str:
        return self.specs[0].name

    def _backend(self, spec: ProviderSpec) -> BaseBackend:
        if spec.name not in self._backends:
            self._backends[spec.name] = spec.backend()
        return self._backends[spec.name]

    def send(self, outgoing: Outgoing) -> ChainOutcome:
        budget = circuit_conf("FAILOVER_BUDGET").total_seconds()
        began = time.monotonic()
        tries: list[ProviderTry] = []
        skipped: list[str] = []
        for n, spec in enumerate(self.specs):
            if n and time.monotonic() - began > budget:
                skipped.append(f"{spec.name}: failover budget of {budget:.0f} s spent")
                continue
            # The last provider is always called: an open circuit moves a message on to another
            # provider, never leaves it without a call (retries with backoff pace a lone provider).
            if n < len(self.specs) - 1:
                allowed, why = circuit_allows(provider=spec.name, now=timezone.now())
                if not allowed:
                    skipped.append(f"{spec.name}: {why}")
                    continue
            started = timezone.now()
            result = _call(spec, self, outgoing)
            finished = timezone.now()
            try:
                circuit_record(provider=spec.name, result=result, now=finished)
            except DatabaseError:  # the provider answered: its answer is recorded, not the count
                logger.exception("could not count provider %s's answer in its circuit", spec.name)
            tries.append(ProviderTry(spec.name, result, started, finished))
            if result.outcome != TRANSIENT:
                break
        if tries:
            last = tries[-1]
            result = last.result
            if result.outcome == TRANSIENT and skipped:
                result = SendResult(result.outcome, result.provider_message_id, _with_skips(result, skipped))
            return ChainOutcome(result, last.provider, tries, skipped)
        return ChainOutcome(
            SendResult.transient("No provider could be called: " + "; ".join(skipped)),
            self.first,
            [],
            skipped,
        )


def _with_skips(result: SendResult, skipped: list[str]) -> str:
    return f"{result.summary} (skipped {'; '.join(skipped)})"


def _call(spec: ProviderSpec, chain: ProviderChain, outgoing: Outgoing) -> SendResult:
    """One provider call within the provider's limits; a backend that raises (or cannot be built)
    counts as transient."""
    try:
        with provider_limit(spec=spec).slot():
            return chain._backend(spec).send(outgoing)
    except Exception as exc:  # noqa: BLE001 - send() maps errors; this guards a broken backend
        logger.exception("provider %s raised for message %s", spec.name, outgoing.message_id)
        return SendResult.transient(f"{type(exc).__name__}: {exc}")


def provider_chain(*, channel: str, chains: dict[str, ProviderChain] | None = None) -> ProviderChain:
    """The chain for a channel, reused from `chains` (a batch keeps one per channel)."""
    if chains is None:
        return ProviderChain(channel=channel)
    if channel not in chains:
        chains[channel] = ProviderChain(channel=channel)
    return chains[channel]


# --- per-provider limits -----------------------------------------------------------------------------


class TokenBucket:
    """`rate` calls a second on average, bursts up to `capacity` (one second's worth by default).
    `take` blocks until a token is free; the clock and the sleep are injectable (tests count, never time)."""

    def __init__(
        self,
        *,
        rate: float,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = rate
        self.capacity = max(1.0, capacity if capacity is not None else rate)
        self.clock, self.sleep = clock, sleep
        self.tokens = self.capacity
        self.stamp = clock()
        self.lock = threading.Lock()

    def take(self) -> None:
        while True:
            with self.lock:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1 - 1e-9:  # not a float's rounding away from a token
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                wait = (1 - self.tokens) / self.rate
            self.sleep(wait)


class ProviderLimit:
    """A provider's concurrency (calls in flight) and rate limit in this process."""

    def __init__(self, *, concurrency: int | None, rate_per_second: float | None):
        self.concurrency, self.rate_per_second = concurrency, rate_per_second
        self.slots = threading.BoundedSemaphore(concurrency) if concurrency else None
        self.bucket = TokenBucket(rate=rate_per_second) if rate_per_second else None

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.slots is not None:
            self.slots.acquire()
        try:
            if self.bucket is not None:
                self.bucket.take()
            yield
        finally:
            if self.slots is not None:
                self.slots.release()


_limits: dict[tuple[str, int | None, float | None], ProviderLimit] = {}
_limits_lock = threading.Lock()


def provider_limit(*, spec: ProviderSpec) -> ProviderLimit:
    """The one limiter of this provider in this process (shared by every thread and every chain)."""
    key = (spec.name, spec.concurrency, spec.rate_per_second)
    limit = _limits.get(key)
    if limit is None:
        with _limits_lock:
            limit = _limits.setdefault(
                key, ProviderLimit(concurrency=spec.concurrency, rate_per_second=spec.rate_per_second)
            )
    return limit
