"""Disposal permits (核准): files, storage, and the in-memory catalogue the rules query.

A permit ties a company, the trucks it covers, an origin construction site, one or more
approved disposal sites, approved routes and operating hours to a validity period. Tables are
in permits/sql/0001_permits.sql; file formats and semantics in
docs/permits-and-black-trucks.md.

- `io`: reading and checking permit files (CSV, JSON);
- `store`: import, listing and status changes in the database;
- `catalog`: `PermitCatalog`, every permit in memory, reloaded when the tables change;
- `lookup`: `PermitLookup`, the permit valid at each fix of a batch, as arrays;
- `cli`: `muck permits ...`.
"""
