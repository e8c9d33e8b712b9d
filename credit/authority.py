"""Who a bureau's records name: the deciding authority and the data source unit.

A bureau sets its deciding authority once, in `[cases]` (printed on decisions and notices);
`[credit]` may name another authority for the lists and exports (认定部门 / 数据来源单位),
and falls back to it when empty."""

from __future__ import annotations

from typing import Any


def authority(settings: Any) -> tuple[str, str | None]:
    """The 认定部门 / 处罚机关 of lists and exports: name and unified social credit code."""
    credit, cases = settings["credit"], settings["cases"]
    if credit["authority_name"]:
        return credit["authority_name"], credit["authority_credit_code"] or None
    return cases["authority_name"], cases["authority_credit_code"] or None


def source_unit(settings: Any) -> tuple[str, str]:
    """The 数据来源单位 of the 双公示 records: name and credit code ('' when unknown)."""
    credit = settings["credit"]
    if credit["source_unit_name"]:
        return credit["source_unit_name"], credit["source_unit_credit_code"]
    name, code = authority(settings)
    return name, code or ""
