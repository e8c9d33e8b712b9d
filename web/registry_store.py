"""Registry writes for the dashboard, each with its audit row in the same transaction.

Checks come from registry.validation; creation of trucks and terminal bindings goes through
registry.service. Edits are plain UPDATEs here until registry/service.py grows them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from registry.service import RegistryError, bind_terminal
from registry.validation import credit_code_valid, normalise_plate
from web.audit import record

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


class FieldError(ValueError):
    """A value refused by the database rules (duplicate, overlap); `field` names the input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _fetch(cur, table: str, cols: tuple[str, ...], row_id: int) -> dict[str, Any] | None:
    from psycopg2 import sql

    cur.execute(
        sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table)
        ),
        (row_id,),
    )
    row = cur.fetchone()
    return dict(zip(cols, row, strict=True)) if row else None


def get_company(cur, company_id: int):
    return _fetch(cur, "companies", COMPANY_COLS, company_id)


def get_truck(cur, truck_id: int):
    return _fetch(cur, "trucks", TRUCK_COLS, truck_id)


def get_terminal(cur, terminal_id: int):
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
    """Insert or update; a credit code failing its check character is stored and flagged."""
    code = data.get("credit_code") or None
    _credit_code_taken(cur, code, company_id)
    valid = bool(code) and credit_code_valid(code)
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
        new_id = cur.fetchone()[0]
        after = get_company(cur, new_id)
        record(cur, "company.create", "companies", new_id, None, after)
        return after
    before = get_company(cur, company_id)
    cur.execute(
        """UPDATE companies SET name = %s, credit_code = %s, credit_code_valid = %s,
               legal_representative = %s, phone = %s, updated_at = now() WHERE id = %s""",
        (*values, company_id),
    )
    after = get_company(cur, company_id)
    record(cur, "company.update", "companies", company_id, before, after)
    return after


def save_truck(cur, data: dict[str, Any], truck_id: int | None = None) -> dict[str, Any]:
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
        new_id = cur.fetchone()[0]
        after = get_truck(cur, new_id)
        record(cur, "truck.create", "trucks", new_id, None, after)
        return after
    before = get_truck(cur, truck_id)
    cur.execute(
        """UPDATE trucks SET plate = %s, plate_color = %s, trailer_plate = %s, company_id = %s,
               updated_at = now() WHERE id = %s""",
        (plate, data["plate_color"], trailer, company, truck_id),
    )
    after = get_truck(cur, truck_id)
    record(cur, "truck.update", "trucks", truck_id, before, after)
    return after


def set_active(cur, entity: str, row_id: int, active: bool) -> dict[str, Any] | None:
    table, cols, getter = {
        "company": ("companies", COMPANY_COLS, get_company),
        "truck": ("trucks", TRUCK_COLS, get_truck),
    }[entity]
    before = getter(cur, row_id)
    if before is None:
        return None
    from psycopg2 import sql

    cur.execute(
        sql.SQL("UPDATE {} SET active = %s, updated_at = now() WHERE id = %s").format(
            sql.Identifier(table)
        ),
        (active, row_id),
    )
    after = getter(cur, row_id)
    record(cur, f"{entity}.{'activate' if active else 'deactivate'}", table, row_id, before, after)
    return after


def truck_id_for_plate(cur, plate: str) -> int:
    cur.execute("SELECT id FROM trucks WHERE plate = %s", (normalise_plate(plate),))
    row = cur.fetchone()
    if row is None:
        raise FieldError("plate", "no registered truck has this plate")
    return row[0]


def save_terminal(cur, data: dict[str, Any], terminal_id: int | None = None) -> dict[str, Any]:
    """`valid_from`/`valid_to` are aware datetimes. Overlapping bindings of one device to two
    trucks are refused (registry.service.bind_terminal's rule)."""
    truck_id = truck_id_for_plate(cur, data["plate"])
    start, end = data["valid_from"], data.get("valid_to")
    if end is not None and end <= start:
        raise FieldError("valid_to", "must be after the start of the binding")
    if terminal_id is None:
        cur.execute(
            "SELECT 1 FROM terminals WHERE device_id = %s AND valid_from = %s",
            (data["device_id"], start),
        )
        if cur.fetchone():
            raise FieldError("valid_from", "this device already has a binding starting then")
        try:
            new_id = bind_terminal(cur, data["device_id"], truck_id, start, end)
        except RegistryError as exc:
            raise FieldError("device_id", str(exc)) from None
        if data.get("model"):
            cur.execute("UPDATE terminals SET model = %s WHERE id = %s", (data["model"], new_id))
        after = get_terminal(cur, new_id)
        record(cur, "terminal.create", "terminals", new_id, None, after)
        return after
    before = get_terminal(cur, terminal_id)
    cur.execute(
        """SELECT 1 FROM terminals WHERE device_id = %s AND id <> %s AND truck_id <> %s
             AND tstzrange(valid_from, valid_to) && tstzrange(%s, %s)""",
        (data["device_id"], terminal_id, truck_id, start, end),
    )
    if cur.fetchone():
        raise FieldError("device_id", "this device is bound to another truck in that period")
    cur.execute(
        """UPDATE terminals SET device_id = %s, truck_id = %s, valid_from = %s, valid_to = %s,
               model = %s WHERE id = %s""",
        (data["device_id"], truck_id, start, end, data.get("model") or None, terminal_id),
    )
    after = get_terminal(cur, terminal_id)
    record(cur, "terminal.update", "terminals", terminal_id, before, after)
    return after


def end_terminal(cur, terminal_id: int, now: dt.datetime) -> dict[str, Any] | None:
    """Deactivate a binding: it ends now. A binding that has not started cannot end now."""
    before = get_terminal(cur, terminal_id)
    if before is None:
        return None
    if before["valid_from"] >= now:
        raise FieldError("valid_from", "the binding has not started; edit its dates instead")
    if before["valid_to"] is not None and before["valid_to"] <= now:
        return before
    cur.execute("UPDATE terminals SET valid_to = %s WHERE id = %s", (now, terminal_id))
    after = get_terminal(cur, terminal_id)
    record(cur, "terminal.deactivate", "terminals", terminal_id, before, after)
    return after
