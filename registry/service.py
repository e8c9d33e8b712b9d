"""Every write to companies, trucks and terminals: the simulator, the demo, the dashboard and
the load test all go through here, so the checks and the plate normalisation are the same
whoever writes.

- `upsert_*` / `bind_terminal`: by natural key (credit code, plate, device and start), for
  imports and simulated cities;
- `save_*`, `set_active`, `end_terminal`: by row id, for the dashboard's forms; each returns
  the record after the change (the dashboard writes its audit row with it);
- `register_fleet` / `remove_company`: scratch fleets of thousands of trucks in one statement.

Every function works in the caller's transaction (`cur`) and never commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

from registry.validation import credit_code_valid, normalise_plate, plate_problem

COMPANY_COLS = (
    "id",
    "name",
    "credit_code",
    "credit_code_valid",
    "legal_representative",
    "phone",
    "active",
)
TRUCK_COLS = ("id", "plate", "plate_color", "trailer_plate", "company_id", "active")
TERMINAL_COLS = ("id", "device_id", "truck_id", "valid_from", "valid_to", "model")


class RegistryError(ValueError):
    """A registry record that cannot be stored; the message names the field."""


class FieldError(RegistryError):
    """A value refused by the database rules (duplicate, overlap); `field` names the input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _credit_code(credit_code: str | None) -> tuple[str | None, bool]:
    """The code as stored and whether it passes its check character. Real registries contain
    codes that fail it: they are stored and flagged, never refused."""
    code = credit_code.strip().upper() if credit_code else None
    return code or None, bool(code) and credit_code_valid(code)


def upsert_company(
    cur, name: str, credit_code: str | None, legal_representative: str | None = None
) -> int:
    if not name.strip():
        raise RegistryError("company name is empty")
    code, valid = _credit_code(credit_code)
    if code:
        cur.execute(
            """INSERT INTO companies (name, credit_code, credit_code_valid, legal_representative)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (credit_code) DO UPDATE SET name = EXCLUDED.name,
                   legal_representative = EXCLUDED.legal_representative, updated_at = now()
               RETURNING id""",
            (name.strip(), code, valid, legal_representative),
        )
    else:
        cur.execute(
            """INSERT INTO companies (name, credit_code, credit_code_valid, legal_representative)
               VALUES (%s, NULL, false, %s) RETURNING id""",
            (name.strip(), legal_representative),
        )
    return cur.fetchone()[0]


def upsert_truck(cur, plate: str, company_id: int | None, plate_color: str = "yellow") -> int:
    problem = plate_problem(plate)
    if problem:
        raise RegistryError(problem)
    cur.execute(
        """INSERT INTO trucks (plate, plate_color, company_id) VALUES (%s, %s, %s)
           ON CONFLICT (plate) DO UPDATE SET company_id = EXCLUDED.company_id,
               plate_color = EXCLUDED.plate_color, updated_at = now()
           RETURNING id""",
        (normalise_plate(plate), plate_color, company_id),
    )
    return cur.fetchone()[0]


def _bound_elsewhere(
    cur,
    device_id: str,
    truck_id: int,
    valid_from: dt.datetime,
    valid_to: dt.datetime | None,
    except_id: int | None = None,
) -> bool:
    """The device is bound to another truck for part of the period (binding `except_id`,
    the one being edited, aside)."""
    cur.execute(
        """SELECT 1 FROM terminals WHERE device_id = %s AND truck_id <> %s
             AND id IS DISTINCT FROM %s
             AND tstzrange(valid_from, valid_to) && tstzrange(%s, %s)""",
        (device_id, truck_id, except_id, valid_from, valid_to),
    )
    return cur.fetchone() is not None


def bind_terminal(
    cur,
    device_id: str,
    truck_id: int,
    valid_from: dt.datetime,
    valid_to: dt.datetime | None = None,
    model: str | None = None,
) -> int:
    if valid_to is not None and valid_to <= valid_from:
        raise RegistryError("terminal binding: valid_to must be after valid_from")
    if _bound_elsewhere(cur, device_id, truck_id, valid_from, valid_to):
        raise RegistryError(f"device {device_id} is already bound to another truck in that period")
    cur.execute(
        """INSERT INTO terminals (device_id, truck_id, valid_from, valid_to, model)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (device_id, valid_from) DO UPDATE SET truck_id = EXCLUDED.truck_id,
               valid_to = EXCLUDED.valid_to
           RETURNING id""",
        (device_id, truck_id, valid_from, valid_to, model),
    )
    return cur.fetchone()[0]


# ------------------------------------------------------------------ records by id (forms)


def _fetch(cur, table: str, cols: tuple[str, ...], row_id: int) -> dict[str, Any] | None:
    cur.execute(
        sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table)
        ),
        (row_id,),
    )
    row = cur.fetchone()
    return dict(zip(cols, row, strict=True)) if row else None


def get_company(cur, company_id: int) -> dict[str, Any] | None:
    return _fetch(cur, "companies", COMPANY_COLS, company_id)


def get_truck(cur, truck_id: int) -> dict[str, Any] | None:
    return _fetch(cur, "trucks", TRUCK_COLS, truck_id)


def get_terminal(cur, terminal_id: int) -> dict[str, Any] | None:
    return _fetch(cur, "terminals", TERMINAL_COLS, terminal_id)


def _credit_code_taken(cur, code: str | None, company_id: int | None) -> None:
    if not code:
        return
    cur.execute(
        "SELECT id FROM companies WHERE credit_code = %s AND id IS DISTINCT FROM %s",
        (code, company_id),
    )
    if cur.fetchone():
        raise FieldError("credit_code", "another company already has this credit code")


def save_company(cur, data: dict[str, Any], company_id: int | None = None) -> dict[str, Any]:
    """Insert (`company_id` None) or update; a credit code failing its check character is
    stored and flagged. Returns the company as stored."""
    code, valid = _credit_code(data.get("credit_code"))
    _credit_code_taken(cur, code, company_id)
    values = (
        data["name"],
        code,
        valid,
        data.get("legal_representative") or None,
        data.get("phone") or None,
    )
    if company_id is None:
        cur.execute(
            """INSERT INTO companies (name, credit_code, credit_code_valid, legal_representative, phone)
               VALUES (%s, %s, %s, %s, %s) RETURNING id""",
            values,
        )
        company_id = cur.fetchone()[0]
    else:
        cur.execute(
            """UPDATE companies SET name = %s, credit_code = %s, credit_code_valid = %s,
                   legal_representative = %s, phone = %s, updated_at = now() WHERE id = %s""",
            (*values, company_id),
        )
    return get_company(cur, company_id)


def save_truck(cur, data: dict[str, Any], truck_id: int | None = None) -> dict[str, Any]:
    """Insert (`truck_id` None) or update; plates are normalised, a plate already registered
    to another truck is refused. Returns the truck as stored."""
    plate = normalise_plate(data["plate"])
    trailer = normalise_plate(data["trailer_plate"]) if data.get("trailer_plate") else None
    company = data.get("company_id") or None
    cur.execute(
        "SELECT id FROM trucks WHERE plate = %s AND id IS DISTINCT FROM %s", (plate, truck_id)
    )
    if cur.fetchone():
        raise FieldError("plate", "a truck with this plate is already registered")
    if truck_id is None:
        cur.execute(
            """INSERT INTO trucks (plate, plate_color, trailer_plate, company_id)
               VALUES (%s, %s, %s, %s) RETURNING id""",
            (plate, data["plate_color"], trailer, company),
        )
        truck_id = cur.fetchone()[0]
    else:
        cur.execute(
            """UPDATE trucks SET plate = %s, plate_color = %s, trailer_plate = %s,
                   company_id = %s, updated_at = now() WHERE id = %s""",
            (plate, data["plate_color"], trailer, company, truck_id),
        )
    return get_truck(cur, truck_id)


# The records with an active flag: entity → (table, getter).
WITH_ACTIVE_FLAG = {"company": ("companies", get_company), "truck": ("trucks", get_truck)}


def set_active(cur, entity: str, row_id: int, active: bool) -> dict[str, Any] | None:
    """(De)activate a company or truck; None when there is no such row."""
    table, getter = WITH_ACTIVE_FLAG[entity]
    cur.execute(
        sql.SQL("UPDATE {} SET active = %s, updated_at = now() WHERE id = %s").format(
            sql.Identifier(table)
        ),
        (active, row_id),
    )
    return getter(cur, row_id) if cur.rowcount else None


def truck_id_for_plate(cur, plate: str) -> int:
    cur.execute("SELECT id FROM trucks WHERE plate = %s", (normalise_plate(plate),))
    row = cur.fetchone()
    if row is None:
        raise FieldError("plate", "no registered truck has this plate")
    return row[0]


def save_terminal(cur, data: dict[str, Any], terminal_id: int | None = None) -> dict[str, Any]:
    """Bind (`terminal_id` None) or edit a binding of `data["device_id"]` to the truck with
    `data["plate"]`; `valid_from`/`valid_to` are aware datetimes. Overlapping bindings of one
    device to two trucks are refused. Returns the binding as stored."""
    truck_id = truck_id_for_plate(cur, data["plate"])
    start, end = data["valid_from"], data.get("valid_to")
    if end is not None and end <= start:
        raise FieldError("valid_to", "must be after the start of the binding")
    model = data.get("model") or None
    if terminal_id is None:
        cur.execute(
            "SELECT 1 FROM terminals WHERE device_id = %s AND valid_from = %s",
            (data["device_id"], start),
        )
        if cur.fetchone():
            raise FieldError("valid_from", "this device already has a binding starting then")
        try:
            terminal_id = bind_terminal(cur, data["device_id"], truck_id, start, end, model)
        except RegistryError as exc:
            raise FieldError("device_id", str(exc)) from None
        return get_terminal(cur, terminal_id)
    if _bound_elsewhere(cur, data["device_id"], truck_id, start, end, except_id=terminal_id):
        raise FieldError("device_id", "this device is bound to another truck in that period")
    cur.execute(
        """UPDATE terminals SET device_id = %s, truck_id = %s, valid_from = %s, valid_to = %s,
               model = %s WHERE id = %s""",
        (data["device_id"], truck_id, start, end, model, terminal_id),
    )
    return get_terminal(cur, terminal_id)


def end_terminal(cur, terminal_id: int, now: dt.datetime) -> dict[str, Any] | None:
    """End a binding now (unchanged if it has ended already). A binding that has not started
    cannot end now. None when there is no such binding."""
    binding = get_terminal(cur, terminal_id)
    if binding is None:
        return None
    if binding["valid_from"] >= now:
        raise FieldError("valid_from", "the binding has not started; edit its dates instead")
    if binding["valid_to"] is not None and binding["valid_to"] <= now:
        return binding
    cur.execute("UPDATE terminals SET valid_to = %s WHERE id = %s", (now, terminal_id))
    return get_terminal(cur, terminal_id)


# ---------------------------------------------------------------------- scratch fleets


def register_fleet(
    cur, company: str, plates: Sequence[str], device_ids: Sequence[str], valid_from: dt.datetime
) -> int:
    """A new company (no credit code) with one truck per plate, each bound to the device at
    the same position from `valid_from`, in two statements whatever the size. Plates are
    normalised but not checked for form: scratch fleets (the load test) use plates outside
    the national scheme on purpose, so that they can never collide with real trucks.
    Returns the company id."""
    if len(plates) != len(device_ids):
        raise RegistryError(f"{len(plates)} plates for {len(device_ids)} devices")
    company_id = upsert_company(cur, company, None)
    cur.execute(
        """WITH d AS (
               SELECT * FROM unnest(%s::text[], %s::text[]) AS x(plate, device_id)
           ), t AS (
               INSERT INTO trucks (plate, company_id)
               SELECT plate, %s FROM d
               RETURNING id, plate
           )
           INSERT INTO terminals (device_id, truck_id, valid_from)
           SELECT d.device_id, t.id, %s FROM d JOIN t ON t.plate = d.plate""",
        ([normalise_plate(p) for p in plates], list(device_ids), company_id, valid_from),
    )
    return company_id


def remove_company(cur, company_id: int) -> None:
    """Delete a company, its trucks and their terminal bindings. Whatever other packages hold
    about the trucks (positions' truck state, violations, trips) must be deleted first: their
    foreign keys refuse otherwise."""
    cur.execute(
        "DELETE FROM terminals WHERE truck_id IN (SELECT id FROM trucks WHERE company_id = %s)",
        (company_id,),
    )
    cur.execute("DELETE FROM trucks WHERE company_id = %s", (company_id,))
    cur.execute("DELETE FROM companies WHERE id = %s", (company_id,))
