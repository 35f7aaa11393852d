"""A provider whose health the test controls through a file, so a qcluster subprocess sees it.

FAULT_CONTROL_FILE holds "fail", "ok" or "hang" (the call never returns: a worker that dies mid-call);
every call appends "<message id> <outcome>" to FAULT_LOG_FILE
(O_APPEND: whole lines even from several worker processes), which is how the test counts provider calls.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from channels_app.backends.base import BaseBackend, Outgoing, SendResult


class FileControlledBackend(BaseBackend):
    name = "faulty"

    def transmit(self, request: Outgoing, outgoing: Outgoing) -> str:
        mode = Path(os.environ["FAULT_CONTROL_FILE"]).read_text().strip()
        if mode == "hang":
            time.sleep(3600)  # the test kills this worker; nothing is logged
        healthy = mode == "ok"
        outcome = "success" if healthy else "transient"
        with open(os.environ["FAULT_LOG_FILE"], "a") as log:
            log.write(f"{outgoing.message_id} {outcome}\n")
        return outcome

    def parse(self, response: str, outgoing: Outgoing) -> SendResult:
        if response == "success":
            return SendResult.success(f"faulty-{outgoing.message_id}", "accepted")
        return SendResult.transient("HTTP 503: provider down (simulated)")
