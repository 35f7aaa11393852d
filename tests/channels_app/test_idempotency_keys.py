"""The message id is the provider's idempotency key, so a re-send after a crash is the provider's no-op."""

from __future__ import annotations

import pytest

from channels_app.backends import Outgoing, push, sms
from channels_app.backends.sms import TwilioSmsBackend

from .servers import http_server


def outgoing(channel: str) -> Outgoing:
    return Outgoing(
        message_id=42,
        channel=channel,
        purpose="transactional",
        recipient="r1",
        to="+14155550123",
        content={"title": "Code", "body": "Your code is 1234."},
    )


@pytest.mark.parametrize("module, backend", [(sms, sms.LocmemSmsBackend), (push, push.LocmemPushBackend)])
def test_the_in_memory_providers_treat_a_repeat_as_a_no_op(module, backend):
    first = backend().send(outgoing("sms"))
    again = backend().send(outgoing("sms"))
    assert first.provider_message_id == again.provider_message_id and len(module.outbox) == 1


def test_twilio_gets_the_message_id_as_its_idempotency_token(settings):
    with http_server() as server:
        settings.CHANNELS = {
            **settings.CHANNELS,
            "SMS_HTTP": {
                **settings.CHANNELS["SMS_HTTP"],
                "BASE_URL": f"{server.url}/ok",
                "ACCOUNT_SID": "AC1",
            },
        }
        TwilioSmsBackend().send(outgoing("sms"))
        TwilioSmsBackend().send(outgoing("sms"))
    tokens = {r["headers"]["i-twilio-idempotency-token"] for r in server.requests}
    assert tokens == {"orchestrator-message-42"}
