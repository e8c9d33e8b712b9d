"""A small built-in fleet for `muck demo` until the full simulator lands (issue 5).

Registers one company and N trucks with terminals through the registry service, then
publishes their fixes over MQTT: each truck drives a loop around the city centre at urban
speeds, loaded on the way out and empty on the way back, with GPS noise. One terminal is
deliberately unregistered (black-truck evidence).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import threading
import time

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.config import MqttEndpoint
from registry.service import bind_terminal, upsert_company, upsert_truck
from telemetry.contract import Topics

DEMO_COMPANY = ("示范渣土运输有限公司", "91440300MA5DEMO01X", "张三")


def register_fleet(conn, trucks: int) -> list[str]:
    """Idempotently register the demo company, trucks and terminals; returns device ids."""
    devices = []
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    with conn.cursor() as cur:
        company = upsert_company(cur, *DEMO_COMPANY)
        for i in range(trucks):
            truck = upsert_truck(cur, f"粤B{10000 + i:05d}", company)
            device = f"DEMO{i:05d}"
            bind_terminal(cur, device, truck, start)
            devices.append(device)
    conn.commit()
    return devices


class MinimalFleet:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        devices: list[str],
        *,
        center: tuple[float, float],
        interval_s: float = 5.0,
        topic_prefix: str = "muck/v1",
        seed: int = 7,
    ) -> None:
        self.endpoint, self.devices, self.interval_s = endpoint, devices + ["UNREG0001"], interval_s
        self.topics = Topics(topic_prefix)
        self.center = center
        rng = random.Random(seed)
        self._phase = {d: rng.uniform(0, 2 * math.pi) for d in self.devices}
        self._radius_m = {d: rng.uniform(1500, 6000) for d in self.devices}
        self._seq = dict.fromkeys(self.devices, 0)
        self._rng = rng
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0

    def _fix(self, device: str, now: float) -> dict:
        speed_kmh = 35.0
        radius = self._radius_m[device]
        angle = self._phase[device] + (speed_kmh / 3.6) * now / radius
        north = radius * math.sin(angle) + self._rng.gauss(0, 8)
        east = radius * math.cos(angle) + self._rng.gauss(0, 8)
        lon0, lat0 = self.center
        lat = lat0 + north / 111_320
        lon = lon0 + east / (111_320 * math.cos(math.radians(lat0)))
        loaded = math.sin(angle) > 0
        self._seq[device] += 1
        return {
            "ts": int(now * 1000),
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed": round(speed_kmh + self._rng.uniform(-5, 5), 1),
            "heading": int(math.degrees(-angle)) % 360,
            "lid": "closed",
            "lift": "down",
            "load": "full" if loaded else "empty",
            "acc": True,
            "seq": self._seq[device],
        }

    def _run(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="muck-demo-fleet")
        if self.endpoint.username:
            client.username_pw_set(self.endpoint.username, self.endpoint.password)
        client.connect(self.endpoint.host, self.endpoint.port)
        client.loop_start()
        encode = msgspec.json.encode
        try:
            while not self._stop.is_set():
                now = time.time()
                for device in self.devices:
                    client.publish(
                        self.topics.telemetry(device), encode(self._fix(device, now)), qos=1
                    )
                    self.published += 1
                self._stop.wait(self.interval_s)
        finally:
            client.loop_stop()
            client.disconnect()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-fleet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
