"""Exports for the city's credit platform: penalty records in the 双公示 layout and list
records (名单), as CSV (UTF-8 with BOM, for Excel), XLSX and JSON, with the national
templates' Chinese column headers.

Nothing is dropped for being wrong: a record whose unified social credit code fails its
GB 32100 check (python-stdnum `cn.uscc`), or whose plate is malformed, is exported with its
problem in the flag column (数据校验) and listed again in the warnings section (CSV: after
a blank row; XLSX: a second sheet; JSON: `warnings`). Text cells that a spreadsheet would
read as a formula (starting with = + - @, or a tab / carriage return) are prefixed with an
apostrophe in CSV and XLSX; JSON carries the values as they are.

Each export is recorded in credit_exports with the file itself and its SHA-256, so that the
file sent is the file on record and can be downloaded again byte for byte.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from stdnum.cn import uscc

from compliance.pipeline import PIPELINE
from credit.authority import authority as bureau_authority
from credit.authority import source_unit
from credit.lists import list_entries
from credit.scoring import COUNTING
from registry.validation import plate_problem

log = logging.getLogger(__name__)
FORMATS = ("csv", "xlsx", "json")
KINDS = ("penalties", "lists")
KIND_LABELS = {rule.kind: rule.label["zh"] for rule in PIPELINE}
FLAG = "数据校验"

# 行政处罚信息 (双公示), the national template's column names (信用中国 行政处罚数据标准).
PENALTY_HEADERS = (
    "行政相对人名称",
    "行政相对人类别",
    "行政相对人代码_1(统一社会信用代码)",
    "法定代表人",
    "行政处罚决定书文号",
    "违法行为类型",
    "违法事实",
    "处罚依据",
    "处罚类别",
    "处罚内容",
    "罚款金额（万元）",
    "处罚决定日期",
    "处罚有效期",
    "公示截止期",
    "处罚机关",
    "处罚机关统一社会信用代码",
    "数据来源单位",
    "数据来源单位统一社会信用代码",
    "备注",
    "涉案车辆",
    FLAG,
)
# 失信主体名单 records (domain brief: subject, credit code, legal representative, list type,
# authority, basis, listing date, removal date), then what an auditor needs beside them.
LIST_HEADERS = (
    "主体名称",
    "统一社会信用代码",
    "法定代表人",
    "名单类型",
    "认定部门",
    "认定依据",
    "列入日期",
    "移出日期",
    "主体类别",
    "列入原因",
    "关联处罚决定书文号",
    "计划移出日期",
    "移出原因",
    FLAG,
)
PARTY_KINDS = {"company": "法人及非法人组织", "individual": "自然人"}
LIST_LABELS = {"watch": "重点关注名单", "red": "红色警示名单", "black": "失信黑名单"}
SUBJECT_LABELS = {"company": "企业", "truck": "车辆", "driver": "驾驶员"}
REMOVAL_LABELS = {
    "expiry": "期满移出",
    "credit_repair": "信用修复",
    "appeal_upheld": "申诉成立",
}
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class ExportError(ValueError):
    """An export request that cannot be served; the message names the parameter."""


@dataclass
class Table:
    kind: str
    headers: tuple[str, ...]
    rows: list[list[Any]] = field(default_factory=list)
    # (row number counting the header as 1, field, value, problem)
    warnings: list[tuple[int, str, str, str]] = field(default_factory=list)


def credit_code_problem(code: str | None) -> str | None:
    if not code:
        return "统一社会信用代码缺失"
    if not uscc.is_valid(code):
        return f"统一社会信用代码校验失败（GB 32100）: {code}"
    return None


def _date(value) -> str:
    return value.isoformat() if value else ""


def _wan(fine: Decimal | None) -> Decimal | None:
    """元 → 万元, exactly (a Decimal: no binary rounding in the file)."""
    return None if fine is None else (Decimal(fine) / Decimal(10000)).normalize()


def penalty_table(conn, settings: Any, start: dt.date, end: dt.date) -> Table:
    """Decided cases (decided, published, closed) with a decision date in [start, end]."""
    credit = settings["credit"]
    default_authority = bureau_authority(settings)
    days = dt.timedelta(days=int(credit["publication_days"]))
    with conn.cursor() as cur:
        cur.execute(
            """SELECT c.party_name, c.party_kind, c.party_credit_code, c.legal_representative,
                      c.decision_no, c.facts, c.legal_basis, c.penalty_category,
                      c.penalty_content, c.fine_yuan, c.decision_date, c.authority_name,
                      c.authority_credit_code, c.demo,
                      array_remove(array_agg(DISTINCT v.kind), NULL),
                      array_remove(array_agg(DISTINCT t.plate), NULL)
               FROM credit_cases c
               LEFT JOIN credit_case_violations cv ON cv.case_id = c.id AND cv.active
               LEFT JOIN violations v ON v.id = cv.violation_id
               LEFT JOIN trucks t ON t.id = v.truck_id
               WHERE c.status = ANY(%s) AND c.decision_date BETWEEN %s AND %s
               GROUP BY c.id ORDER BY c.decision_date, c.decision_no""",
            (list(COUNTING), start, end),
        )
        rows = cur.fetchall()
    conn.rollback()
    table = Table("penalties", PENALTY_HEADERS)
    for (
        name,
        party_kind,
        code,
        rep,
        decision_no,
        facts,
        basis,
        category,
        content,
        fine,
        decided,
        authority,
        authority_code,
        demo,
        kinds,
        plates,
    ) in rows:
        number = len(table.rows) + 2
        problems = []
        if party_kind == "company":
            problem = credit_code_problem(code)
            if problem:
                problems.append(problem)
                table.warnings.append((number, PENALTY_HEADERS[2], code or "", problem))
        for plate in plates:
            problem = plate_problem(plate)
            if problem:
                problems.append(f"车牌号 {plate}: {problem}")
                table.warnings.append((number, "涉案车辆", plate, problem))
        table.rows.append(
            [
                name,
                PARTY_KINDS.get(party_kind, party_kind),
                code or "",
                rep or "",
                decision_no,
                "、".join(KIND_LABELS.get(k, k) for k in sorted(kinds)),
                facts,
                basis,
                category or "",
                content,
                _wan(fine),
                _date(decided),
                _date(decided + days),
                _date(decided + days),
                authority or default_authority[0],
                authority_code or default_authority[1] or "",
                *source_unit(settings),
                "演示数据" if demo else "",
                "、".join(sorted(plates)),
                "；".join(problems),
            ]
        )
    return table


def list_table(conn, settings: Any, start: dt.date, end: dt.date) -> Table:
    """Entries that took effect or came off their list in [start, end] (signed off ones
    only: a proposal is not a listing)."""
    entries = [
        e
        for e in list_entries(conn, status=("active", "removed"), limit=1_000_000)
        if (e["listed_on"] and start <= e["listed_on"] <= end)
        or (e["removed_on"] and start <= e["removed_on"] <= end)
    ]
    entries.sort(key=lambda e: (e["listed_on"], e["id"]))
    table = Table("lists", LIST_HEADERS)
    for e in entries:
        number = len(table.rows) + 2
        problem, field_name = None, LIST_HEADERS[1]
        if e["subject_kind"] == "company":
            problem = credit_code_problem(e["credit_code"])
        elif e["subject_kind"] == "truck":
            problem = plate_problem(e["credit_code"] or "")
            problem = f"车牌号: {problem}" if problem else None
        if problem:
            table.warnings.append((number, field_name, e["credit_code"] or "", problem))
        table.rows.append(
            [
                e["subject_name"],
                e["credit_code"] or "",
                e["legal_representative"] or "",
                LIST_LABELS[e["list_type"]],
                e["authority_name"],
                e["legal_basis"],
                _date(e["listed_on"]),
                _date(e["removed_on"]),
                SUBJECT_LABELS[e["subject_kind"]],
                e["reason"] + ("（演示数据）" if e["demo"] else ""),
                "、".join(n for n in e["decision_nos"] if n),
                _date(e["planned_removal_on"]),
                REMOVAL_LABELS.get(e["removal_reason"], e["removal_reason"] or ""),
                problem or "",
            ]
        )
    return table


def neutralise(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, made plain text."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def to_csv(table: Table) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.headers)
    for row in table.rows:
        writer.writerow([neutralise(_cell_text(v)) for v in row])
    if table.warnings:
        writer.writerow([])
        writer.writerow(["校验警告", "行号", "字段", "值", "问题"])
        for number, name, value, problem in table.warnings:
            writer.writerow(["", number, name, neutralise(value), neutralise(problem)])
    return "\ufeff".encode() + out.getvalue().encode("utf-8")


def to_xlsx(table: Table) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    sheet.title = "处罚信息" if table.kind == "penalties" else "名单信息"
    sheet.append(list(table.headers))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in table.rows:
        # Amounts stay numbers; every text cell is neutralised and typed as text.
        sheet.append(
            [float(v) if isinstance(v, Decimal) else neutralise(_cell_text(v)) for v in row]
        )
    for column, header in zip(sheet.columns, table.headers, strict=True):
        width = max(len(header), *(len(str(c.value or "")) for c in column)) + 2
        sheet.column_dimensions[column[0].column_letter].width = min(width * 1.6, 60)
    warnings = book.create_sheet("校验警告")
    warnings.append(["行号", "字段", "值", "问题"])
    for number, name, value, problem in table.warnings:
        warnings.append([number, name, neutralise(value), neutralise(problem)])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def to_json(table: Table, meta: dict[str, Any]) -> bytes:
    records = [
        {
            h: (format(v, "f") if isinstance(v, Decimal) else v)
            for h, v in zip(table.headers, row, strict=True)
        }
        for row in table.rows
    ]
    document = {
        **meta,
        "columns": list(table.headers),
        "records": records,
        "warnings": [
            {"行号": n, "字段": name, "值": value, "问题": problem}
            for n, name, value, problem in table.warnings
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=1, default=str).encode("utf-8")


@dataclass(frozen=True)
class ExportRecord:
    id: int
    kind: str
    format: str
    filter: dict[str, Any]
    row_count: int
    warning_count: int
    sha256: str
    filename: str
    created_by: str
    via: str
    created_at: dt.datetime


def export(
    conn,
    settings: Any,
    kind: str,
    start: dt.date,
    end: dt.date,
    fmt: str,
    actor: str,
    via: str = "cli",
) -> tuple[ExportRecord, bytes]:
    """Build the file and record it (with the file) in one transaction."""
    if kind not in KINDS:
        raise ExportError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if end < start:
        raise ExportError(f"--to ({end}) is before --from ({start})")
    table = (penalty_table if kind == "penalties" else list_table)(conn, settings, start, end)
    flt = {"from": start.isoformat(), "to": end.isoformat()}
    if fmt == "csv":
        data = to_csv(table)
    elif fmt == "xlsx":
        data = to_xlsx(table)
    else:
        data = to_json(table, {"kind": kind, "filter": flt, "row_count": len(table.rows)})
    digest = hashlib.sha256(data).hexdigest()
    filename = f"{kind}_{start.isoformat()}_{end.isoformat()}.{fmt}"
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO credit_exports (kind, format, filter, row_count, warning_count,
                   sha256, filename, content, created_by, via)
               VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s)
               RETURNING id, created_at""",
            (
                kind,
                fmt,
                json.dumps(flt),
                len(table.rows),
                len(table.warnings),
                digest,
                filename,
                data,
                actor,
                via,
            ),
        )
        export_id, created_at = cur.fetchone()
    conn.commit()
    record = ExportRecord(
        export_id,
        kind,
        fmt,
        flt,
        len(table.rows),
        len(table.warnings),
        digest,
        filename,
        actor,
        via,
        created_at,
    )
    return record, data


_RECORD = "id, kind, format, filter, row_count, warning_count, sha256, filename, created_by, via, created_at"


def list_exports(conn, limit: int = 100) -> list[ExportRecord]:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_RECORD} FROM credit_exports ORDER BY created_at DESC, id DESC LIMIT %s",  # noqa: S608 (constant)
            (limit,),
        )
        rows = [ExportRecord(*row) for row in cur.fetchall()]
    conn.rollback()
    return rows


class ExportTampered(RuntimeError):
    """The stored file no longer matches the checksum recorded with it."""


def fetch_export(conn, export_id: int) -> tuple[ExportRecord, bytes] | None:
    """The recorded file, checked against its SHA-256 before it is handed out again."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_RECORD}, content FROM credit_exports WHERE id = %s",  # noqa: S608 (constant)
            (export_id,),
        )
        row = cur.fetchone()
    conn.rollback()
    if row is None:
        return None
    record, data = ExportRecord(*row[:-1]), bytes(row[-1])
    if hashlib.sha256(data).hexdigest() != record.sha256:
        raise ExportTampered(f"export {export_id}: the stored file does not match its SHA-256")
    return record, data


# ---- the nightly export -------------------------------------------------------------------
_NIGHTLY_LOCK = 0x6E697465  # "nite"


def nightly_export(conn, settings: Any, now: dt.datetime | None = None) -> list[Path]:
    """Once per local day, after `credit.nightly_export_hour`: yesterday's penalty and list
    records to `credit.nightly_export_dir` (written whole, then renamed into place). Several
    collectors: the first one does it, under a lock. Returns the files written."""
    credit = settings["credit"]
    folder = credit["nightly_export_dir"]
    if not folder:
        return []
    now = now or dt.datetime.now(dt.UTC)
    local = now.astimezone(_zone(settings))
    if local.hour < int(credit["nightly_export_hour"]):
        return []
    day = local.date() - dt.timedelta(days=1)
    fmt = credit["nightly_export_format"]
    written = []
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (_NIGHTLY_LOCK,))
        if not cur.fetchone()[0]:
            conn.rollback()
            return []
    try:
        for kind in KINDS:
            with conn.cursor() as cur:
                cur.execute(
                    """SELECT 1 FROM credit_exports WHERE via = 'nightly' AND kind = %s
                         AND filter->>'from' = %s AND format = %s""",
                    (kind, day.isoformat(), fmt),
                )
                done = cur.fetchone() is not None
            conn.rollback()
            if done:
                continue
            target = Path(folder)
            target.mkdir(parents=True, exist_ok=True)
            record, data = export(conn, settings, kind, day, day, fmt, "system", via="nightly")
            path = target / record.filename
            with tempfile.NamedTemporaryFile(dir=target, delete=False, suffix=".part") as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)
            log.info("nightly export %s: %d rows to %s", kind, record.row_count, path)
            written.append(path)
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_NIGHTLY_LOCK,))
        conn.commit()
    return written


def _zone(settings: Any):
    from zoneinfo import ZoneInfo

    return ZoneInfo(settings.city["timezone"])


def nightly_job(settings: Any):
    """The job muck/jobs.py lists when `credit.nightly_export_dir` is set."""
    from core.scheduling import Job

    return Job(
        "credit nightly export",
        lambda conn: nightly_export(conn, settings),
        float(settings["credit"]["nightly_check_s"]),
        at_start=True,
    )
