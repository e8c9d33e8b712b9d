"""Geofence engine: zones (construction sites, disposal sites, route corridors, restricted
zones, speed zones), evaluated in batches in a metric projection."""
