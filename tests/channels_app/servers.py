"""Real servers on loopback for backend tests: a scripted HTTP server and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedHTTPServer:
    """Answers by the first path segment: /ok → 201, /busy → 429, /broken → 500, /slow → sleeps,
    /bad → 400, /gone → 410. Keeps every request for the test to read back (a ProgrammableHTTPServer
    with this script; requests also carry the parsed `form`)."""

    ANSWERS = {
        "busy": (429, {"code": 20429, "message": "Too Many Requests"}),
        "broken": (500, {"message": "Internal error"}),
        "slow": (201, {"sid": "SMslow", "status": "queued"}),
        "bad": (400, {"code": 21211, "message": "Invalid 'To' Phone Number"}),
        "gone": (410, {"message": "subscription expired"}),
    }

    def __init__(self):
        self.server = ProgrammableHTTPServer(self.answer)

    def answer(self, path, headers, raw):
        request = self.server.requests[-1]
        request["form"] = parse_qs(raw.decode("latin-1")) if "form" in headers.get("content-type", "") else {}
        mode = path.strip("/").split("/")[0]
        n = len(self.server.requests)
        if mode == "ok":
            body = {"sid": f"SM{n:032d}", "status": "queued"}
            return 201, body, 0, {"Location": f"{self.server.url}/messages/{n}"}
        status, body = self.ANSWERS.get(mode, (404, {"message": "no such route"}))
        return status, body, 1.5 if mode == "slow" else 0

    def __getattr__(self, name):
        return getattr(self.server, name)


@contextmanager
def http_server():
    scripted = ScriptedHTTPServer()
    with _serving(scripted.server):
        yield scripted


class SmtpRecorder:
    """An aiosmtpd handler that keeps what it received; `refuse` makes RCPT answer with that reply."""

    def __init__(self, refuse: str | None = None):
        self.refuse = refuse
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(refuse: str | None = None):
    from aiosmtpd.controller import Controller

    handler = SmtpRecorder(refuse)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


class ProgrammableHTTPServer(ThreadingHTTPServer):
    """Answers each POST with `answer(path, headers, body) -> (status, body, delay[, headers])`;
    keeps every request. For fake provider APIs whose answers a test scripts (FCM, a token endpoint)."""

    daemon_threads = True

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[dict] = []
        super().__init__(("127.0.0.1", 0), _ProgrammableHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProgrammableHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append({"path": self.path, "headers": headers, "raw": raw})
        status, body, delay, *extra = self.server.answer(self.path, headers, raw)
        if delay:
            time.sleep(delay)
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (extra[0] if extra else {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout case)


@contextmanager
def _serving(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def programmable_server(answer):
    with _serving(ProgrammableHTTPServer(answer)) as server:
        yield server
