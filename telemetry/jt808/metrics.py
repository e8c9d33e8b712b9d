"""`muck gateway jt808 --metrics-port`: the gateway's counters as Prometheus metrics, and
its `/healthz`.

Why a custom collector read at scrape time instead of prometheus-client counters updated
per frame: the gateway already counts every frame, result and quarantine reason in plain
dicts on its event loop (about 0.1 µs each); a prometheus-client counter takes a lock per
increment, which on the path of every location report would cost more than the counting.
A scrape copies the dicts (atomic under the GIL: a C-level copy of a plain dict) from the
metrics server's thread.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Gateway.counts keys that are message ids ("0200") versus named events ("auth_ok").
_MESSAGE_ID_LENGTH = 4


class GatewayMetrics:
    """Reads a running `Gateway` (telemetry.jt808.server) on each scrape."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    def collect(self):
        gateway = self.gateway
        counts = dict(gateway.counts)
        quarantined = dict(gateway.quarantined)
        connections = list(gateway.connections)
        uplink = gateway.uplink

        open_ = GaugeMetricFamily(
            "muck_jt808_connections",
            "Terminal connections open, by whether the terminal has authenticated",
            labels=["authenticated"],
        )
        authenticated = sum(1 for c in connections if c.authenticated)
        open_.add_metric(["true"], authenticated)
        open_.add_metric(["false"], len(connections) - authenticated)
        yield open_

        frames = CounterMetricFamily(
            "muck_jt808_frames",
            "Well-formed frames received, by message id (hex)",
            labels=["msg_id"],
        )
        events = CounterMetricFamily(
            "muck_jt808_events",
            "Gateway events: registration results, authentications, refusals, closed "
            "connections by reason, reports not acknowledged because the broker did not",
            labels=["event"],
        )
        for key, value in sorted(counts.items()):
            if len(key) == _MESSAGE_ID_LENGTH and all(ch in "0123456789abcdef" for ch in key):
                frames.add_metric([key], value)
            else:
                events.add_metric([key], value)
        yield frames
        yield events

        bad = CounterMetricFamily(
            "muck_jt808_quarantined",
            "Frames and bodies put in quarantine, by reason code (docs/jt808.md)",
            labels=["reason"],
        )
        for reason, value in sorted(quarantined.items()):
            bad.add_metric([reason], value)
        yield bad

        yield CounterMetricFamily(
            "muck_jt808_published",
            "Fixes and statuses the broker acknowledged (PUBACK)",
            value=uplink.published,
        )
        yield CounterMetricFamily(
            "muck_jt808_publish_refused",
            "Publishes failed at once: broker away or the in-flight window full",
            value=uplink.refused,
        )
        yield GaugeMetricFamily(
            "muck_jt808_inflight",
            "Publishes waiting for the broker's PUBACK",
            value=uplink.inflight,
        )
        yield GaugeMetricFamily(
            "muck_jt808_broker_connected",
            "1 while the gateway is connected to the broker",
            value=1 if uplink.connected.is_set() else 0,
        )


def gateway_registry(gateway: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GatewayMetrics(gateway))
    return registry


def gateway_health(gateway: Any) -> tuple[bool, dict[str, Any]]:
    """Healthy while connected to the broker: without it no report is acknowledged."""
    connected = gateway.uplink.connected.is_set()
    return connected, {
        "mqtt": "connected" if connected else "disconnected",
        "connections": len(gateway.connections),
        "inflight": gateway.uplink.inflight,
    }
