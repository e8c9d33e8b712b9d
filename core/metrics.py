"""The small HTTP endpoint every long-running process serves: `/metrics` and `/healthz`.

`muck collect` (and `muck demo`) serve it on `--metrics-port`; the web app has its own
routes (web/health.py) over the same registries. Each package keeps its metrics in its own
`CollectorRegistry` (telemetry's ingestion counters belong to one collector object, so tests
can run several in one process); the server concatenates them.

`/healthz` answers 200 with a JSON body when the process's check passes and 503 with the
same body when it does not, which is what Docker, Kubernetes and load balancers read.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]

# Metrics of code that is not tied to one object (the rules' violation counters, the clock
# jobs of a process): one registry per process, served with the per-object ones.
PROCESS_REGISTRY = CollectorRegistry()


def render(registries: Sequence[CollectorRegistry]) -> bytes:
    return b"".join(generate_latest(r) for r in registries)


class MetricsServer:
    """`/metrics` and `/healthz` on a port of their own, in a daemon thread."""

    def __init__(
        self,
        port: int,
        registries: Sequence[CollectorRegistry],
        health: HealthCheck,
        *,
        host: str = "0.0.0.0",
    ) -> None:
        registries = list(registries)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, render(registries))
                elif path == "/healthz":
                    try:
                        ok, detail = health()
                    except Exception as exc:  # noqa: BLE001 - a failing check is unhealthy
                        ok, detail = False, {"error": repr(exc)[:300]}
                    body = json.dumps({"status": "ok" if ok else "unhealthy", **detail})
                    self._send(200 if ok else 503, "application/json", body.encode())
                else:
                    self._send(404, "text/plain", b"not found: /metrics, /healthz\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # scrapes every 15 s: not worth a line
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="muck-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
