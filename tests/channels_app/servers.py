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


class ScriptedHTTPServer(ThreadingHTTPServer):
    """Answers by the first path segment: /ok → 201, /busy → 429, /broken → 500, /slow → sleeps,
    /bad → 400, /gone → 410. Keeps every request for the test to read back."""

    daemon_threads = True

    def __init__(self):
        self.requests: list[dict] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        mode = self.path.strip("/").split("/")[0]
        form = parse_qs(raw.decode("latin-1")) if "form" in self.headers.get("Content-Type", "") else {}
        self.server.requests.append(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "raw": raw,
                "form": form,
            }
        )
        if mode == "slow":
            time.sleep(1.5)
        status, body = {
            "ok": (201, {"sid": f"SM{len(self.server.requests):032d}", "status": "queued"}),
            "busy": (429, {"code": 20429, "message": "Too Many Requests"}),
            "broken": (500, {"message": "Internal error"}),
            "slow": (201, {"sid": "SMslow", "status": "queued"}),
            "bad": (400, {"code": 21211, "message": "Invalid 'To' Phone Number"}),
            "gone": (410, {"message": "subscription expired"}),
        }.get(mode, (404, {"message": "no such route"}))
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if mode == "ok":
                self.send_header("Location", f"{self.server.url}/messages/{len(self.server.requests)}")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout case)


@contextmanager
def http_server():
    server = ScriptedHTTPServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


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
    """Answers each POST with `answer(path, headers, body) -> (status, json_body, delay_seconds)`;
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
        status, body, delay = self.server.answer(self.path, headers, raw)
        if delay:
            time.sleep(delay)
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def programmable_server(answer):
    server = ProgrammableHTTPServer(answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
