"""paho-mqtt transport for the collector: MQTT 5 (or 3.1.1 when `mqtt.client = "paho"`).

Same interface as telemetry.mqtt.lean.LeanSubscriber (telemetry.transport.Subscriber): messages reach `on_batch` with the
connection generation, and `ack(generation, ids)` acknowledges after commit (manual acks).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from telemetry.transport import OnBatch, Received

log = logging.getLogger(__name__)


class PahoSubscriber:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        subscriptions: Sequence[str],
        on_batch: OnBatch,
        *,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        mqtt5: bool = True,
        session_expiry_s: int = 86400,
        receive_maximum: int = 2000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.subscriptions = list(subscriptions)
        self.on_batch = on_batch
        self.keepalive = keepalive
        self.mqtt5 = mqtt5
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = min(65535, receive_maximum)
        self.connected = threading.Event()
        self.generation = 0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if mqtt5 else False,
            protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311,
            manual_ack=True,
        )
        if username:
            client.username_pw_set(username, password)
        if ssl_context is not None:
            client.tls_set_context(ssl_context)
        client.reconnect_delay_set(int(max(1, reconnect_min_s)), int(max(1, reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            return
        self.generation += 1
        log.info(
            "connected to %s:%s as %s (session present: %s)",
            self.host,
            self.port,
            self.client_id,
            flags.session_present,
        )
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [self.subscriptions[i] for i, rc in enumerate(reason_codes) if rc.is_failure]
        if refused:
            log.error("broker refused subscriptions: %s", refused)
        else:  # from here on the broker routes the topics to us (tests wait for it)
            log.info("subscribed to %d topic filter(s)", len(reason_codes))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.generation += 1
        self.connected.clear()
        log.warning("MQTT disconnected (%s)", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self.on_batch(
            self.generation, [Received(message.topic, message.payload, message.mid, message.qos)]
        )

    def start(self) -> None:
        if self.mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            props.ReceiveMaximum = self.receive_maximum
            self.client.connect_async(
                self.host, self.port, self.keepalive, clean_start=False, properties=props
            )
        else:
            self.client.connect_async(self.host, self.port, self.keepalive)
        self.client.loop_start()

    def ack(self, generation: int, packet_ids: Sequence[int]) -> bool:
        if generation != self.generation:
            return False
        for mid in packet_ids:
            self.client.ack(mid, 1)
        return True

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
