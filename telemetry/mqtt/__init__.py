"""The two MQTT clients behind `telemetry.transport.Subscriber`: `lean` (MQTT 3.1.1, the hot
path) and `paho` (MQTT 5, or 3.1.1 when `mqtt.client = "paho"`)."""
