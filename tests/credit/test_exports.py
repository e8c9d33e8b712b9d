"""Exports opened the way the credit platform opens them: CSV with the csv module, XLSX with
openpyxl, JSON; the BOM, the national headers, invalid codes flagged (never dropped),
formula cells neutralised, every export recorded and downloaded again byte for byte."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from credit.exports import (
    LIST_HEADERS,
    PENALTY_HEADERS,
    ExportError,
    ExportTampered,
    export,
    fetch_export,
    list_exports,
)
from credit.lists import evaluate, list_entries, sign_off
from tests.credit.history import at, case, company, violation

MUCK = str(Path(sys.executable).with_name("muck"))
BAD_CODE = "91440300MA5EXAMPLE"  # fails the GB 32100 check character


@pytest.fixture
def records(db, settings):
    good, (t1,) = company(db, "深圳好运输有限公司", plates=("粤B10001",))
    bad, (t2,) = company(db, '=HYPERLINK("http://x")运输公司', BAD_CODE, plates=("粤B10002",))
    # A plate the registry would refuse today, from an older import (real registries hold them).
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO trucks (plate, company_id) VALUES ('粤B1', %s) RETURNING id", (bad,)
        )
        t3 = cur.fetchone()[0]
    db.commit()
    v1 = violation(db, settings, t1, "speeding", at(2026, 3, 1))
    v2 = violation(db, settings, t2, "illegal_dumping", at(2026, 3, 2))
    v3 = violation(db, settings, t3, "no_valid_permit", at(2026, 3, 3))
    c1 = case(db, good, [v1], decided_at=at(2026, 3, 10), fine_yuan=2000)
    c2 = case(db, bad, [v2, v3], decided_at=at(2026, 3, 12), fine_yuan=50000)
    open_case = case(
        db, good, [violation(db, settings, t1, "speeding", at(2026, 3, 4))], decided_at=None
    )
    with db.cursor() as cur:
        cur.execute(
            "UPDATE credit_cases SET facts = '-1 车辆未密闭', legal_representative = '@admin' WHERE id = %s",
            (c2,),
        )
    db.commit()
    return {"good": good, "bad": bad, "cases": (c1, c2, open_case)}


def read_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM for Excel"
    return list(csv.reader(io.StringIO(data[3:].decode("utf-8"))))


def test_penalties_csv_cell_by_cell(db, settings, records):
    record, data = export(
        db, settings, "penalties", dt.date(2026, 3, 1), dt.date(2026, 3, 31), "csv", "credit1"
    )
    rows = read_csv(data)
    assert tuple(rows[0]) == PENALTY_HEADERS
    body = rows[1:3]
    col = {h: i for i, h in enumerate(PENALTY_HEADERS)}
    # The open case is not a penalty; both decided ones are there, in decision order.
    assert record.row_count == 2 and len(body) == 2 and rows[3] == []
    good, bad = body
    assert good[col["行政相对人名称"]] == "深圳好运输有限公司"
    assert good[col["行政相对人类别"]] == "法人及非法人组织"
    assert good[col["行政相对人代码_1(统一社会信用代码)"]] == "91110000600037341L"
    assert good[col["罚款金额（万元）"]] == "0.2"
    assert good[col["处罚决定日期"]] == "2026-03-10"
    assert good[col["公示截止期"]] == (dt.date(2026, 3, 10) + dt.timedelta(days=1095)).isoformat()
    assert good[col["违法行为类型"]] == "超速"
    assert good[col["数据校验"]] == ""
    # The invalid code is exported, flagged, and in the warnings section; formulas are text.
    assert bad[col["行政相对人代码_1(统一社会信用代码)"]] == BAD_CODE
    assert bad[col["行政相对人名称"]] == '\'=HYPERLINK("http://x")运输公司'
    assert bad[col["违法事实"]] == "'-1 车辆未密闭"
    assert bad[col["法定代表人"]] == "'@admin"
    assert bad[col["罚款金额（万元）"]] == "5"
    assert "GB 32100" in bad[col["数据校验"]] and "粤B1" in bad[col["数据校验"]]
    assert bad[col["违法行为类型"]] == "乱倒乱卸、无有效核准"
    assert rows[4][0] == "校验警告"
    warnings = rows[5:]
    assert [(w[1], w[2], w[3]) for w in warnings] == [
        ("3", "行政相对人代码_1(统一社会信用代码)", BAD_CODE),
        ("3", "涉案车辆", "粤B1"),
    ]
    assert record.warning_count == 2
    assert record.sha256 == hashlib.sha256(data).hexdigest()


def test_penalties_xlsx_and_json(db, settings, records):
    _, data = export(
        db, settings, "penalties", dt.date(2026, 3, 1), dt.date(2026, 3, 31), "xlsx", "credit1"
    )
    book = openpyxl.load_workbook(io.BytesIO(data))
    sheet = book["处罚信息"]
    assert tuple(c.value for c in sheet[1]) == PENALTY_HEADERS
    col = {h: i for i, h in enumerate(PENALTY_HEADERS)}
    bad = [c.value for c in sheet[3]]
    assert bad[col["行政相对人名称"]].startswith("'=")
    assert sheet.cell(3, col["行政相对人名称"] + 1).data_type == "s"  # text, not a formula
    assert bad[col["罚款金额（万元）"]] == 5
    assert "GB 32100" in bad[col["数据校验"]]
    warnings = book["校验警告"]
    assert [c.value for c in warnings[2]][:3] == [3, "行政相对人代码_1(统一社会信用代码)", BAD_CODE]
    assert warnings.max_row == 3
    record, data = export(
        db, settings, "penalties", dt.date(2026, 3, 1), dt.date(2026, 3, 31), "json", "credit1"
    )
    doc = json.loads(data)
    assert doc["row_count"] == 2 and doc["columns"] == list(PENALTY_HEADERS)
    # JSON carries the values as they are (no spreadsheet to protect), flags included.
    assert doc["records"][1]["行政相对人名称"].startswith("=HYPERLINK")
    assert doc["records"][1]["罚款金额（万元）"] == "5"
    assert len(doc["warnings"]) == 2 and doc["warnings"][0]["值"] == BAD_CODE


def test_list_records_and_redownload(db, settings, records):
    evaluate(db, settings, now=at(2026, 3, 20))
    for entry in list_entries(db, status="pending"):
        sign_off(db, settings, entry["id"], "credit1")
    today = dt.datetime.now(ZoneInfo(settings.city["timezone"])).date()  # the city's day
    record, data = export(
        db,
        settings,
        "lists",
        today - dt.timedelta(days=1),
        today + dt.timedelta(days=1),
        "csv",
        "credit1",
        via="web",
    )
    rows = read_csv(data)
    assert tuple(rows[0]) == LIST_HEADERS
    col = {h: i for i, h in enumerate(LIST_HEADERS)}
    by_name = {r[col["主体名称"]]: r for r in rows[1 : 1 + record.row_count]}
    # The bad company: dumping (90) + black-truck operation → blacklist; its code flagged.
    bad = by_name['\'=HYPERLINK("http://x")运输公司']
    assert bad[col["名单类型"]] == "失信黑名单"
    assert bad[col["统一社会信用代码"]] == BAD_CODE and "GB 32100" in bad[col["数据校验"]]
    assert bad[col["认定部门"]] == settings["cases"]["authority_name"]  # [credit] names none
    assert bad[col["列入日期"]] == today.isoformat()  # the day it was signed off
    assert bad[col["关联处罚决定书文号"]].startswith("深城管罚")
    # No truck lost 30 points: company entries only.
    assert {r[col["主体类别"]] for r in by_name.values()} == {"企业"}
    # Downloaded again: the same bytes, checked against the recorded checksum.
    again = fetch_export(db, record.id)
    assert again is not None and again[1] == data
    assert again[0].filter == {
        "from": (today - dt.timedelta(days=1)).isoformat(),
        "to": (today + dt.timedelta(days=1)).isoformat(),
    }
    assert [e.id for e in list_exports(db)] == [record.id]
    with db.cursor() as cur:
        cur.execute(
            "UPDATE credit_exports SET content = content || 'x'::bytea WHERE id = %s", (record.id,)
        )
    db.commit()
    with pytest.raises(ExportTampered):
        fetch_export(db, record.id)


def test_bad_requests_are_refused_clearly(db, settings):
    with pytest.raises(ExportError, match="format must be one of"):
        export(db, settings, "penalties", dt.date(2026, 1, 1), dt.date(2026, 1, 2), "pdf", "x")
    with pytest.raises(ExportError, match="before --from"):
        export(db, settings, "lists", dt.date(2026, 1, 2), dt.date(2026, 1, 1), "csv", "x")


def test_cli_export_and_fetch(db, settings, records, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MUCK_DATABASE_URL": settings.database_url}

    def muck(*args):
        return subprocess.run(
            [MUCK, *args], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path
        )

    out = tmp_path / "p.xlsx"
    done = muck(
        "export",
        "penalties",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-31",
        "--format",
        "xlsx",
        "--out",
        str(out),
        "--by",
        "li",
    )
    assert done.returncode == 0, done.stderr
    assert "2 records, 2 warnings" in done.stdout and "数据校验" in done.stderr
    (record,) = list_exports(db)
    assert record.created_by == "li" and record.via == "cli" and record.format == "xlsx"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == record.sha256
    fetched = muck("export", "fetch", str(record.id), "--out", str(tmp_path / "again.xlsx"))
    assert fetched.returncode == 0 and (tmp_path / "again.xlsx").read_bytes() == out.read_bytes()
    bad = muck("export", "lists", "--from", "March", "--to", "2026-03-31")
    assert bad.returncode != 0 and "is not a date" in bad.stderr and "Traceback" not in bad.stderr
    default = muck(
        "export", "lists", "--from", "2026-03-01", "--to", "2026-03-31", "--format", "json"
    )
    assert default.returncode == 0 and (tmp_path / "lists_2026-03-01_2026-03-31.json").exists()
