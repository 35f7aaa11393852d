"""Email through Django's own email backends: SMTP, console, locmem or any django-anymail ESP by settings."""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from orchestrator.models import Purpose
from orchestrator.preferences import list_unsubscribe_headers

from .base import BaseBackend, Outgoing, SendResult, content_text

# Bulk mail carries one-click unsubscribe (RFC 8058, required by mailbox providers for bulk senders);
# receipts and alerts do not: there is nothing to unsubscribe from.
LIST_UNSUBSCRIBE_PURPOSES = frozenset({Purpose.ENGAGEMENT, Purpose.PROMOTIONAL})


class DjangoEmailBackend(BaseBackend):
    """Sends with `settings.EMAIL_BACKEND`; the Message-ID is derived from the message id, so a resend
    after a lost result is recognisable downstream, and anymail ESPs get the id as metadata."""

    @property
    def email_backend(self) -> str:
        return self.options.get("EMAIL_BACKEND") or settings.EMAIL_BACKEND

    @property
    def name(self) -> str:
        return "email:" + self.email_backend.rsplit(".", 2)[-2]

    def build(self, outgoing: Outgoing) -> EmailMessage:
        domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "localhost"
        headers = {
            "Message-ID": f"<{outgoing.idempotency_key}@{domain}>",
            "X-Orchestrator-Message-Id": str(outgoing.message_id),
        }
        if outgoing.purpose in LIST_UNSUBSCRIBE_PURPOSES and outgoing.recipient_id is not None:
            headers.update(
                list_unsubscribe_headers(
                    recipient_id=outgoing.recipient_id,
                    message_id=outgoing.message_id,
                    channel=outgoing.channel,
                    purpose=outgoing.purpose,
                )
            )
        message = EmailMessage(
            subject=str(outgoing.content.get("subject") or outgoing.content.get("title") or ""),
            body=content_text(outgoing.content),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[outgoing.to],
            headers=headers,
        )
        # django-anymail: metadata travels to the ESP and comes back in its tracking webhooks.
        message.metadata = {"orchestrator_message_id": str(outgoing.message_id)}
        return message

    def transmit(self, request: EmailMessage, outgoing: Outgoing) -> tuple[int, EmailMessage]:
        # Per-provider options (another SMTP host or ESP) go to the connection; the timeout too.
        options = {k.lower(): v for k, v in self.options.items() if k != "EMAIL_BACKEND"}
        if self.timeout is not None:
            options["timeout"] = self.timeout
        connection = get_connection(backend=self.email_backend, fail_silently=False, **options)
        return connection.send_messages([request]), request

    def parse(self, response: tuple[int, EmailMessage], outgoing: Outgoing) -> SendResult:
        count, message = response
        status = getattr(message, "anymail_status", None)
        if status is not None:
            statuses = set(status.status or ())
            if statuses and statuses <= {"rejected", "invalid"}:
                return SendResult.permanent(f"ESP refused the message: {', '.join(sorted(statuses))}")
            # An ESP's id may be any value, 0 included (anymail's test backend numbers from 0).
            esp_id = "" if status.message_id is None else str(status.message_id)
            return SendResult.success(esp_id, f"ESP status {sorted(statuses)}")
        if not count:
            return SendResult.permanent("The email backend accepted no message.")
        return SendResult.success(message.extra_headers["Message-ID"], "handed to the email backend")

    def classify(self, exc: Exception) -> SendResult:
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            text = "; ".join(f"{addr}: {code} {msg!r}" for addr, (code, msg) in exc.recipients.items())
            if codes and all(400 <= c < 500 for c in codes):
                return SendResult.transient(f"recipient refused for now: {text}")
            # 550/551/553: no such mailbox — a hard bounce at hand-off.
            dead = bool(codes) and all(c in (550, 551, 553) for c in codes)
            return SendResult.permanent(f"recipient refused: {text}", undeliverable=dead)
        if isinstance(exc, smtplib.SMTPResponseException):
            text = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            return SendResult.permanent(text) if exc.smtp_code >= 500 else SendResult.transient(text)
        status_code = getattr(exc, "status_code", None)  # anymail API errors
        if isinstance(status_code, int) and 400 <= status_code < 500 and status_code not in (408, 429):
            return SendResult.permanent(f"ESP said {status_code}: {exc}")
        if type(exc).__name__ in {"AnymailRecipientsRefused", "AnymailInvalidAddress"}:
            return SendResult.permanent(str(exc), undeliverable=True)
        return super().classify(exc)
