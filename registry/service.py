"""Registry writes used by the CLI, the simulator and (later) the dashboard."""

from __future__ import annotations

import datetime as dt

from registry.validation import credit_code_valid, normalise_plate, plate_problem


class RegistryError(ValueError):
    """A registry record that cannot be stored; the message names the field."""


def upsert_company(
    cur, name: str, credit_code: str | None, legal_representative: str | None = None
) -> int:
    if not name.strip():
        raise RegistryError("company name is empty")
    code = credit_code.strip().upper() if credit_code else None
    valid = bool(code) and credit_code_valid(code)
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


def bind_terminal(
    cur, device_id: str, truck_id: int, valid_from: dt.datetime, valid_to: dt.datetime | None = None
) -> int:
    if valid_to is not None and valid_to <= valid_from:
        raise RegistryError("terminal binding: valid_to must be after valid_from")
    cur.execute(
        """SELECT 1 FROM terminals WHERE device_id = %s AND truck_id <> %s
             AND tstzrange(valid_from, valid_to) && tstzrange(%s, %s)""",
        (device_id, truck_id, valid_from, valid_to),
    )
    if cur.fetchone():
        raise RegistryError(f"device {device_id} is already bound to another truck in that period")
    cur.execute(
        """INSERT INTO terminals (device_id, truck_id, valid_from, valid_to) VALUES (%s, %s, %s, %s)
           ON CONFLICT (device_id, valid_from) DO UPDATE SET truck_id = EXCLUDED.truck_id,
               valid_to = EXCLUDED.valid_to
           RETURNING id""",
        (device_id, truck_id, valid_from, valid_to),
    )
    return cur.fetchone()[0]
