"""Black-truck (黑车) detection from ANPR sightings and from unregistered terminals.

Each camera sighting is classified once (table `sighting_checks`):

- `unregistered_plate`: the plate is neither a registered truck's plate nor its trailer plate;
- `no_valid_permit`: a registered truck with no active permit valid at the sighting time;
- `untracked`: registered and permitted, but no GPS fix of the truck within ±window of the
  sighting and within radius of the camera's site (the zone named by `site_id`: distance to
  the zone's geometry, 0 inside; a camera without a known site is checked on time only);
- `ok`; or `pending` while an `untracked` decision could still be overturned by a fix that
  has not arrived yet: it is decided when seen_at + window + grace has passed.

Reads with confidence below `compliance.anpr_min_confidence` are classified and listed but
flagged `low_confidence`; a plate needs at least one confident read to be a black truck.

The black-truck list (`black_trucks`) has one row per plate, plus one per unregistered device
id whose telemetry was stored with truck_id NULL. Both are recomputed from their evidence, so
the matcher and the scan are idempotent; they run under transaction-level advisory locks, so
concurrent runs queue rather than duplicate work.
"""
