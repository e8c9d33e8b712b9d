"""The dashboard's registry changes, each with its audit row in the same transaction.

`registry.service` does the write (and its checks); this module reads the record before,
calls it, and records who changed what. The registry knows nothing of the audit log.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from registry import service as registry
from web.audit import record

_SAVES = {
    "company": ("companies", registry.get_company, registry.save_company),
    "truck": ("trucks", registry.get_truck, registry.save_truck),
    "terminal": ("terminals", registry.get_terminal, registry.save_terminal),
}


def _save(cur, entity: str, data: dict[str, Any], row_id: int | None) -> dict[str, Any]:
    table, getter, save = _SAVES[entity]
    before = getter(cur, row_id) if row_id is not None else None
    after = save(cur, data, row_id)
    if row_id is None:
        record(cur, f"{entity}.create", table, after["id"], None, after)
    else:
        record(cur, f"{entity}.update", table, row_id, before, after)
    return after


def save_company(cur, data: dict[str, Any], company_id: int | None = None) -> dict[str, Any]:
    return _save(cur, "company", data, company_id)


def save_truck(cur, data: dict[str, Any], truck_id: int | None = None) -> dict[str, Any]:
    return _save(cur, "truck", data, truck_id)


def save_terminal(cur, data: dict[str, Any], terminal_id: int | None = None) -> dict[str, Any]:
    return _save(cur, "terminal", data, terminal_id)


def set_active(cur, entity: str, row_id: int, active: bool) -> dict[str, Any] | None:
    table, getter = registry.WITH_ACTIVE_FLAG[entity]
    before = getter(cur, row_id)
    if before is None:
        return None
    after = registry.set_active(cur, entity, row_id, active)
    record(cur, f"{entity}.{'activate' if active else 'deactivate'}", table, row_id, before, after)
    return after


def end_terminal(cur, terminal_id: int, now: dt.datetime) -> dict[str, Any] | None:
    before = registry.get_terminal(cur, terminal_id)
    after = registry.end_terminal(cur, terminal_id, now)
    if after is not None and after != before:  # a binding that had ended is left unaudited
        record(cur, "terminal.deactivate", "terminals", terminal_id, before, after)
    return after
