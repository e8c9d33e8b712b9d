"""Benchmarks: above the product, like the simulators. They may import any product package and
`simulators`; no product package imports them.

- `bench.ingest`: `muck bench ingest`, MQTT → PostgreSQL end to end (publisher and collector
  processes).
- `bench.geofence`: `muck bench geofence`, zone classification and route distances on
  synthetic zones (also the tests' large cases).
- `bench.rules`: `muck bench rules`, what the compliance rules add to ingesting a batch.
- `bench.web_live`: `muck bench web`, the live map's update.
- `bench.web_violations`: `muck bench web --violations`, the violations list, a violation's
  page and the track around it.
- `bench.cli`: the click commands; `muck/cli.py` adds them to its `bench` group.
"""
