"""The administrative registry: transport companies, trucks and the terminals bound to them.

Everything downstream asks the registry who a device is: telemetry binds fixes to trucks,
compliance finds black trucks and scores companies.
"""
