"""Shared foundation: settings, database access, migrations, embedded services and the CLI root.

Domain packages (telemetry, geofence, compliance, web, simulators) own their tables and SQL;
this package only knows how to find and apply their migrations.
"""
