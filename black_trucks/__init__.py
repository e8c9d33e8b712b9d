"""Black-truck (黑车) detection from ANPR sightings and from unregistered terminals.

- `sightings`: each camera sighting classified once (unregistered plate, no valid permit,
  untracked, ok or pending);
- `devices`: telemetry stored with truck_id NULL, summarised per device and local day;
- `store`: the black-truck list (`black_trucks`), one row per plate plus one per
  unregistered device id, listed and handled by officers;
- `scan`: both detections at once, and the collector's clock job; `cli`: `muck black-trucks`.

Both detections recompute the list from their evidence, so the matcher and the scan are
idempotent; they run under transaction-level advisory locks, so concurrent runs queue rather
than duplicate work.
"""
