"""Telemetry ingestion: the MQTT contract, payload decoding and validation, the collector and
the `positions`, `quarantine`, `sightings`, `device_status` and `truck_state` tables."""
