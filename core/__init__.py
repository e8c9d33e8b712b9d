"""Shared foundation: settings, database access, migrations and embedded services.

Domain packages (registry, telemetry, geofence, compliance, web, …) own their tables and SQL;
this package only knows how to find and apply their migrations, and imports none of them.
The `muck` command and the processes that join packages live in the composition root, `muck/`.
"""
