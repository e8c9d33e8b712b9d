"""A webhook receiver for the tests: a real HTTP server on 127.0.0.1 that records what it
gets, verifies signatures, and can be taken down and brought back on the same port."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.services import free_port


class Receiver:
    def __init__(
        self,
        port: int | None = None,
        status: int = 200,
        keep_alive: bool = False,
        delay_s: float = 0.0,
    ):
        self.port = port or free_port()
        self.delay_s = delay_s  # how long each answer takes (a slow receiver)
        self.status = status
        self.keep_alive = keep_alive
        self.connections: set[tuple] = set()  # client addresses seen
        self.received: list[dict] = []  # {"headers", "body", "json", "at"}
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []  # open connections: closed by stop()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if self.keep_alive else "HTTP/1.0"

            def setup(self):
                super().setup()
                receiver._sockets.append(self.connection)

            def do_POST(self):  # noqa: N802 - http.server's name
                receiver.connections.add(self.client_address)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(
                        {
                            "headers": dict(self.headers),
                            "body": body,
                            "json": json.loads(body),
                            "at": time.time(),
                            "path": self.path,
                        }
                    )
                time.sleep(receiver.delay_s)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for sock in self._sockets:  # as a process that stops: kept connections die too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._sockets.clear()

    def bodies(self) -> list[dict]:
        with self._lock:
            return [r["json"] for r in self.received]
