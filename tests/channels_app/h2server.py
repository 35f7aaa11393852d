"""A fake HTTP/2 server on loopback speaking cleartext HTTP/2 with prior knowledge (h2c), built on the
`h2` state machine in a threaded socket server. For provider APIs that only speak HTTP/2 (APNs).

`answer(request) -> (status, headers, body, delay)` is called once per complete request (a dict with
`method`, `path`, `headers` (lower-case names), `body` and `http_version`); every request is kept in
`server.requests`. Each answer is sent from a thread of its own, so a slow answer (`delay`, the
timeout case) holds up only its stream, never the other requests multiplexed on the connection.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions

Answer = Callable[[dict], tuple[int, dict[str, str], bytes, float]]


class H2Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Answer):
        self.answer = answer
        self.requests: list[dict] = []
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _H2Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _H2Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        lock = threading.Lock()
        sock: socket.socket = self.request
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        streams: dict[int, dict] = {}
        while True:
            try:
                data = sock.recv(65535)
            except OSError:
                return
            if not data:
                return
            with lock:
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    return
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        headers = dict(event.headers)
                        streams[event.stream_id] = {
                            "method": headers.get(":method"),
                            "path": headers.get(":path"),
                            "headers": {k.lower(): v for k, v in headers.items() if not k.startswith(":")},
                            "body": b"",
                            "http_version": "HTTP/2",
                        }
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id]["body"] += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        request = streams.pop(event.stream_id)
                        self.server.requests.append(request)
                        threading.Thread(
                            target=self._respond,
                            args=(conn, lock, sock, event.stream_id, request),
                            daemon=True,
                        ).start()
                with contextlib.suppress(OSError):
                    sock.sendall(conn.data_to_send())

    def _respond(self, conn, lock, sock, stream_id: int, request: dict) -> None:
        status, headers, body, delay = self.server.answer(request)
        if delay:
            time.sleep(delay)
        with lock:
            try:
                conn.send_headers(
                    stream_id,
                    [(":status", str(status)), ("content-length", str(len(body))), *headers.items()],
                    end_stream=not body,
                )
                if body:
                    conn.send_data(stream_id, body, end_stream=True)
                sock.sendall(conn.data_to_send())
            except (h2.exceptions.H2Error, OSError):
                pass  # the client reset the stream or left (the timeout case)


@contextlib.contextmanager
def h2_server(answer: Answer) -> Iterator[H2Server]:
    server = H2Server(answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
