"""Permits in the database: import (upsert by number), listing, status changes.

Tables are in permits/sql/0001_permits.sql. Companies, trucks and zones are looked up, never
written: a permit may only name what the registry and the geofence already hold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from psycopg2.extras import Json

from core.db import transaction
from permits.io import PermitError, PermitImportError, PermitRecord
from registry.validation import normalise_plate

STATUSES = ("active", "suspended", "revoked")


def resolve_records(cur, records: Sequence[PermitRecord]) -> tuple[dict[str, Any], list[str]]:
    """Look up companies, trucks and zones; every problem is reported (`muck permits import
    --dry-run` stops here)."""
    errors: list[str] = []
    plates = sorted({p for r in records for p in r.plates})
    cur.execute("SELECT plate, id FROM trucks WHERE plate = ANY(%s)", (plates,))
    trucks = dict(cur.fetchall())
    codes = sorted(
        {r.origin_site for r in records} | {c for r in records for c in r.disposal_sites + r.routes}
    )
    cur.execute("SELECT code, kind FROM geofence_zones WHERE code = ANY(%s)", (codes,))
    kinds = dict(cur.fetchall())
    credit_codes = sorted({r.company_credit_code for r in records if r.company_credit_code})
    cur.execute(
        "SELECT credit_code, id FROM companies WHERE credit_code = ANY(%s)", (credit_codes,)
    )
    by_code = dict(cur.fetchall())
    ids_given = sorted({r.company_id for r in records if r.company_id is not None})
    cur.execute("SELECT id FROM companies WHERE id = ANY(%s)", (ids_given,))
    known_ids = {row[0] for row in cur.fetchall()}
    names = sorted({r.company for r in records if r.company and not r.company_credit_code})
    cur.execute(
        "SELECT name, array_agg(id ORDER BY id) FROM companies WHERE name = ANY(%s) GROUP BY name",
        (names,),
    )
    by_name = dict(cur.fetchall())

    company_ids: dict[str, int] = {}
    for r in records:
        if r.company_credit_code:
            cid = by_code.get(r.company_credit_code)
            if cid is None:
                errors.append(
                    f"{r.where('company_credit_code')}: no registered company with credit code "
                    f"{r.company_credit_code!r}"
                )
            else:
                company_ids[r.number] = cid
        elif r.company_id is not None:
            if r.company_id in known_ids:
                company_ids[r.number] = r.company_id
            else:
                label = "company_id" if "company_id" in r.labels else "company"
                errors.append(f"{r.where(label)}: no registered company has id {r.company_id}")
        elif r.company:
            ids = by_name.get(r.company, [])
            if not ids:
                errors.append(f"{r.where('company')}: no registered company named {r.company!r}")
            elif len(ids) > 1:
                errors.append(
                    f"{r.where('company')}: {len(ids)} companies are named {r.company!r}; "
                    "give the credit code instead"
                )
            else:
                company_ids[r.number] = ids[0]
        missing = [p for p in r.plates if p not in trucks]
        if missing:
            errors.append(
                f"{r.where('trucks')}: not registered truck(s): {', '.join(missing)} "
                "(register them first)"
            )
        for name, wanted, codes_ in (
            ("origin_site", "site", (r.origin_site,)),
            ("disposal_sites", "disposal", r.disposal_sites),
            ("routes", "route", r.routes),
        ):
            for code in codes_:
                kind = kinds.get(code)
                if kind is None:
                    errors.append(f"{r.where(name)}: no zone with code {code!r}")
                elif kind != wanted:
                    errors.append(f"{r.where(name)}: zone {code!r} is a {kind}, not a {wanted}")
    return {"companies": company_ids, "trucks": trucks}, errors


def import_permits(conn, records: Sequence[PermitRecord], *, source: str = "") -> dict[str, int]:
    """Check every record against the database and upsert by number, in one transaction.

    Raises PermitImportError (nothing stored) listing every problem. Trucks and zones of an
    existing permit are replaced by the file's; its status is kept unless the file gives one.
    Returns {"inserted": n, "updated": m}.
    """
    counts = {"inserted": 0, "updated": 0}
    with transaction(conn) as cur:
        resolved, errors = resolve_records(cur, records)
        if errors:
            raise PermitImportError(errors, source)
        for r in records:
            cur.execute(
                """INSERT INTO permits (number, company_id, origin_site, valid_from, valid_to,
                                        operating_hours, status, status_changed_at, authority,
                                        note)
                   VALUES (%(number)s, %(company)s, %(origin)s, %(vfrom)s, %(vto)s, %(hours)s,
                           coalesce(%(status)s, 'active'), now(), %(authority)s, %(note)s)
                   ON CONFLICT (number) DO UPDATE SET
                       company_id = EXCLUDED.company_id, origin_site = EXCLUDED.origin_site,
                       valid_from = EXCLUDED.valid_from, valid_to = EXCLUDED.valid_to,
                       operating_hours = EXCLUDED.operating_hours,
                       status = coalesce(%(status)s, permits.status),
                       status_changed_at = CASE
                           WHEN coalesce(%(status)s, permits.status) = permits.status
                           THEN permits.status_changed_at ELSE now() END,
                       authority = EXCLUDED.authority, note = EXCLUDED.note,
                       updated_at = now()
                   RETURNING id, (xmax = 0)""",
                {
                    "number": r.number,
                    "company": resolved["companies"][r.number],
                    "origin": r.origin_site,
                    "vfrom": r.valid_from,
                    "vto": r.valid_to,
                    "hours": Json(r.operating_hours),
                    "status": r.status,
                    "authority": r.authority,
                    "note": r.note,
                },
            )
            permit_id, inserted = cur.fetchone()
            counts["inserted" if inserted else "updated"] += 1
            cur.execute("DELETE FROM permit_trucks WHERE permit_id = %s", (permit_id,))
            cur.execute("DELETE FROM permit_zones WHERE permit_id = %s", (permit_id,))
            cur.execute(
                """INSERT INTO permit_trucks (permit_id, truck_id)
                   SELECT %s, unnest(%s::bigint[])""",
                (permit_id, [resolved["trucks"][p] for p in r.plates]),
            )
            roles = ["disposal"] * len(r.disposal_sites) + ["route"] * len(r.routes)
            codes = list(r.disposal_sites + r.routes)
            positions = list(range(len(r.disposal_sites))) + list(range(len(r.routes)))
            cur.execute(
                """INSERT INTO permit_zones (permit_id, role, zone_code, position)
                   SELECT %s, role, code, pos
                   FROM unnest(%s::text[], %s::text[], %s::smallint[]) AS t(role, code, pos)""",
                (permit_id, roles, codes, positions),
            )
    return counts


_SELECT = """
    SELECT p.id, p.number, p.company_id, c.name, c.credit_code, p.origin_site,
           p.valid_from, p.valid_to, p.operating_hours, p.status, p.status_reason,
           p.status_changed_at, p.authority, p.note, p.created_at, p.updated_at,
           coalesce((SELECT array_agg(z.zone_code ORDER BY z.position) FROM permit_zones z
                     WHERE z.permit_id = p.id AND z.role = 'disposal'), '{}'),
           coalesce((SELECT array_agg(z.zone_code ORDER BY z.position) FROM permit_zones z
                     WHERE z.permit_id = p.id AND z.role = 'route'), '{}'),
           coalesce((SELECT array_agg(t.id ORDER BY t.plate) FROM permit_trucks pt
                     JOIN trucks t ON t.id = pt.truck_id WHERE pt.permit_id = p.id), '{}'),
           coalesce((SELECT array_agg(t.plate ORDER BY t.plate) FROM permit_trucks pt
                     JOIN trucks t ON t.id = pt.truck_id WHERE pt.permit_id = p.id), '{}')
    FROM permits p JOIN companies c ON c.id = p.company_id
"""


@dataclass(frozen=True)
class PermitRow:
    """A permit as stored, for listing and display."""

    id: int
    number: str
    company_id: int
    company: str
    company_credit_code: str | None
    origin_site: str
    valid_from: dt.date
    valid_to: dt.date
    operating_hours: list[dict[str, Any]]
    status: str
    status_reason: str | None
    status_changed_at: dt.datetime | None
    authority: str | None
    note: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    disposal_sites: tuple[str, ...]
    routes: tuple[str, ...]
    truck_ids: tuple[int, ...]
    plates: tuple[str, ...]


def _row(row: tuple) -> PermitRow:
    values = list(row)
    for i in (16, 17, 18, 19):
        values[i] = tuple(values[i])
    return PermitRow(*values)


def list_permits(
    conn, *, plate: str | None = None, valid_at: dt.datetime | None = None, city_tz: str = "UTC"
) -> list[PermitRow]:
    """Permits, optionally only those covering `plate` and/or active and valid at `valid_at`."""
    where: list[str] = []
    params: list[Any] = []
    if plate:
        where.append(
            """EXISTS (SELECT 1 FROM permit_trucks pt JOIN trucks t ON t.id = pt.truck_id
                       WHERE pt.permit_id = p.id AND t.plate = %s)"""
        )
        params.append(normalise_plate(plate))
    if valid_at is not None:
        day = valid_at.astimezone(ZoneInfo(city_tz)).date()
        where.append("p.status = 'active' AND p.valid_from <= %s AND p.valid_to >= %s")
        params += [day, day]
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    with conn.cursor() as cur:
        cur.execute(_SELECT + clause + " ORDER BY p.valid_from DESC, p.number", params)  # noqa: S608 (fixed fragments only)
        rows = [_row(row) for row in cur.fetchall()]
    conn.commit()
    return rows


def get_permit(conn, number: str) -> PermitRow | None:
    with conn.cursor() as cur:
        cur.execute(_SELECT + " WHERE p.number = %s", (number.strip(),))  # noqa: S608 (fixed fragments only)
        row = cur.fetchone()
    conn.commit()
    return _row(row) if row else None


def set_status(conn, number: str, status: str, reason: str | None = None) -> PermitRow:
    """Suspend, revoke or reinstate a permit; the reason and time are recorded."""
    if status not in STATUSES:
        raise PermitError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    if status != "active" and not (reason and reason.strip()):
        raise PermitError(f"a reason is required to make a permit {status}")
    with transaction(conn) as cur:
        cur.execute(
            """UPDATE permits SET status = %s, status_reason = %s, status_changed_at = now(),
                      updated_at = now()
               WHERE number = %s RETURNING id""",
            (status, reason.strip() if reason else None, number.strip()),
        )
        if cur.fetchone() is None:
            raise PermitError(f"no permit numbered {number!r}")
    permit = get_permit(conn, number)
    assert permit is not None
    return permit


def revoke_permit(conn, number: str, reason: str) -> PermitRow:
    return set_status(conn, number, "revoked", reason)


def all_permit_rows(cur) -> list[PermitRow]:
    """Every permit, in id order (the catalogue reads them in its snapshot)."""
    cur.execute(_SELECT + " ORDER BY p.id")  # noqa: S608 (fixed fragments only)
    return [_row(row) for row in cur.fetchall()]


def current_version(conn) -> int:
    """The permit catalogue version (changes with every change to permits)."""
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM permit_version WHERE id = 1")
        row = cur.fetchone()
    return int(row[0]) if row else 0
