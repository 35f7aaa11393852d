"""The backend contract: `send()` owns the flow and error mapping; concrete backends fill small hooks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

logger = logging.getLogger(__name__)
_sessions = threading.local()

SUCCESS, TRANSIENT, PERMANENT = "success", "transient", "permanent"


@dataclass(frozen=True)
class Outgoing:
    """What a backend needs to deliver one message; no ORM objects (the call runs outside transactions)."""

    message_id: int
    channel: str
    purpose: str
    recipient: str
    to: str
    content: dict[str, Any]
    expires_at: datetime | None = None
    recipient_id: int | None = None  # for links signed per recipient (List-Unsubscribe)

    @property
    def idempotency_key(self) -> str:
        """Stable per message: passed to providers that de-duplicate on a key."""
        return f"orchestrator-message-{self.message_id}"


@dataclass(frozen=True)
class SendResult:
    outcome: str  # success | transient | permanent (channels_app.models.AttemptOutcome values)
    provider_message_id: str = ""
    summary: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, provider_message_id: str = "", summary: str = "accepted") -> SendResult:
        return cls(SUCCESS, provider_message_id, summary)

    @classmethod
    def transient(cls, summary: str) -> SendResult:
        return cls(TRANSIENT, "", summary)

    @classmethod
    def permanent(cls, summary: str, *, undeliverable: bool = False) -> SendResult:
        """A refusal; `undeliverable` when it says the address itself is dead (unknown mailbox,
        unregistered push token): delivery then suppresses that contact point."""
        return cls(PERMANENT, "", summary, {"undeliverable": True} if undeliverable else {})

    @property
    def undeliverable(self) -> bool:
        return bool(self.extra.get("undeliverable"))


class Outbox(list):
    """What an in-memory backend "sent" in this process, in order (tests read and clear it like
    django.core.mail.outbox), indexed by idempotency key: a repeat is found at once, where a scan made
    each send cost as much as everything sent before it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._by_key: dict[str, dict] = {}
        self._count, self._last = 0, None

    def once(self, key: str, entry: Callable[[], dict]) -> dict:
        """The entry sent with `key` (the first, if several), else `entry()` appended and returned."""
        with self._lock:
            if len(self) != self._count or (self and self[-1] is not self._last):
                # Changed behind the index (cleared, edited by a test): index it again.
                self._by_key = {}
                for sent in reversed(self):
                    if sent.get("idempotency_key"):
                        self._by_key[sent["idempotency_key"]] = sent
            found = self._by_key.get(key)
            if found is None:
                found = self._by_key[key] = entry()
                self.append(found)
            self._count, self._last = len(self), self[-1]
            return found


class TransientError(Exception):
    """Raise from a hook: try again later."""


class PermanentError(Exception):
    """Raise from a hook: this message can never go through this provider."""


class BaseBackend:
    """send() = build(outgoing) → transmit(request) → parse(response); exceptions become results.

    Unknown exceptions count as transient (the retry budget bounds them), so a bug in a provider call
    never loses a message and never loops forever.
    """

    name = "base"
    # Seconds to wait for this provider (set per provider by the chain); None: the backend's default.
    timeout: float | None = None

    def __init__(self, **options: Any) -> None:
        # Per-provider options from CHANNELS["BACKENDS"] (e.g. another base URL or SMTP host).
        self.options = options

    def send(self, outgoing: Outgoing) -> SendResult:
        try:
            request = self.build(outgoing)
            response = self.transmit(request, outgoing)
            return self.parse(response, outgoing)
        except PermanentError as exc:
            return SendResult.permanent(_summary(exc))
        except TransientError as exc:
            return SendResult.transient(_summary(exc))
        except Exception as exc:  # noqa: BLE001 - any provider failure becomes a recorded result
            result = self.classify(exc)
            if result.outcome != PERMANENT:
                logger.info("transient delivery error for message %s: %s", outgoing.message_id, exc)
            return result

    def build(self, outgoing: Outgoing) -> Any:
        """Map the message to the provider's request."""
        return outgoing

    def transmit(self, request: Any, outgoing: Outgoing) -> Any:
        """Make the provider call (network I/O; never inside a transaction)."""
        raise NotImplementedError

    def parse(self, response: Any, outgoing: Outgoing) -> SendResult:
        """Turn the provider's response into a result."""
        return SendResult.success(str(response or ""))

    def classify(self, exc: Exception) -> SendResult:
        """Map an exception from build/transmit/parse to a result (default: transient)."""
        return SendResult.transient(f"{type(exc).__name__}: {_summary(exc)}")


class ConfiguredBackend(BaseBackend):
    """A backend configured by a section of settings.CHANNELS (`settings_key`), which a provider's
    OPTIONS override key by key (e.g. another base URL for a second account), with its TIMEOUT."""

    settings_key = ""

    def __init__(self, **options: Any) -> None:
        from django.conf import settings

        super().__init__(**options)
        self.conf = {**settings.CHANNELS[self.settings_key], **{k.upper(): v for k, v in options.items()}}

    @property
    def wait(self) -> float:
        """Seconds to wait for the provider: the chain's per-provider timeout, else the section's."""
        return self.timeout if self.timeout is not None else self.conf["TIMEOUT"]

    def http_session(self) -> Any:
        """A requests.Session of this thread's own (keep-alive: a pool of delivery threads reuses its
        connections to the provider instead of opening one per message; Sessions are not thread-safe)."""
        import requests

        session = getattr(_sessions, "session", None)
        if session is None:
            session = _sessions.session = requests.Session()
        return session

    def http_post(self, session: Any, url: str, **kwargs: Any) -> Any:
        """POST with this provider's timeout; no answer in time or no connection is transient."""
        import requests

        try:
            return session.post(url, timeout=self.wait, **kwargs)
        except requests.Timeout as exc:
            raise TransientError(f"no answer within {self.wait} s ({type(exc).__name__})") from exc
        except requests.ConnectionError as exc:
            raise TransientError(f"could not connect: {exc}") from exc


def _summary(exc: Exception, limit: int = 500) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def content_text(content: dict[str, Any], *, with_title: bool = False) -> str:
    """The body as plain text, with the title on top and the action link below when asked."""
    parts = []
    if with_title and content.get("title"):
        parts.append(str(content["title"]))
    if content.get("body"):
        parts.append(str(content["body"]))
    if content.get("action_url"):
        parts.append(str(content["action_url"]))
    return "\n\n".join(parts)
