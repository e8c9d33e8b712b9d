"""Bulk registry import and export (`muck registry import|export|template`) on the real
database: exact line/column errors with nothing stored, idempotent re-import, lossless round
trips in every format."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from stdnum.cn import uscc

from registry.bulk import export_records, import_rows
from registry.tables import FORMATS, RegistryFileError, read_rows, template, write_table

pytestmark = pytest.mark.services
TZ = ZoneInfo("Asia/Shanghai")


def code(prefix17: str) -> str:
    return prefix17 + uscc.calc_check_digit(prefix17)


GOOD_A = code("91440300MA5DC0L4X")
GOOD_B = code("91110108MA01ABCDE")
BAD_CHECK = GOOD_A[:-1] + ("0" if GOOD_A[-1] != "0" else "1")  # well-formed, check fails

COMPANIES_CSV = (
    "企业名称,统一社会信用代码,法定代表人,联系电话,是否有效\r\n"
    f"甲运输有限公司,{GOOD_A},张三,0755-1234,是\r\n"
    f"乙运输有限公司,{GOOD_B},李四,,否\r\n"
    "丙运输队,,王五,13800000000,\r\n"
)


def run(db, kind: str, data: bytes, name: str = "f.csv", **kw):
    rows = read_rows(kind, data, name)
    with db.cursor() as cur:
        report = import_rows(cur, kind, rows, tz=TZ, source=name, **kw)
    db.commit()
    return report


def count(db, table: str) -> int:
    with db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed table names
        return cur.fetchone()[0]


def refused(db, kind: str, data: bytes, name: str = "f.csv") -> list[str]:
    with pytest.raises(RegistryFileError) as info:
        run(db, kind, data, name)
    db.rollback()
    return info.value.errors


def seed(db) -> None:
    run(db, "companies", COMPANIES_CSV.encode("utf-8-sig"))
    run(
        db,
        "trucks",
        (
            "车牌号,车牌颜色,挂车号牌,企业统一社会信用代码,企业名称,是否有效\n"
            f"粤B12345,黄色,粤B1234挂,{GOOD_A},,是\n"
            f"粤B23456,蓝色,,{GOOD_B},,否\n"
            "粤B34567,,,,丙运输队,\n"
            "粤B45678,,,,,\n"
        ).encode(),
    )
    run(
        db,
        "terminals",
        (
            "终端编号,车牌号,绑定开始,绑定结束,终端型号\n"
            "T100,粤B12345,2026-01-01 08:00,2026-06-01 08:00:30.250000,JT808-A\n"
            "T100,粤B23456,2026-06-01 08:00:30.250000,,\n"
            "T200,粤B34567,2026-03-01T00:00:00+00:00,,X1\n"
        ).encode(),
    )


def test_companies_import_gbk_bom_and_plain_utf8_alike(db):
    for encoded in (
        COMPANIES_CSV.encode("gbk"),  # Excel's "CSV" on Chinese Windows
        COMPANIES_CSV.encode("utf-8-sig"),  # Excel's "CSV UTF-8"
        COMPANIES_CSV.encode("utf-8"),
    ):
        with db.cursor() as cur:
            cur.execute("TRUNCATE companies RESTART IDENTITY CASCADE")
        db.commit()
        report = run(db, "companies", encoded)
        assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
        with db.cursor() as cur:
            cur.execute(
                "SELECT name, credit_code, credit_code_valid, phone, active FROM companies ORDER BY id"
            )
            assert cur.fetchall() == [
                ("甲运输有限公司", GOOD_A, True, "0755-1234", True),
                ("乙运输有限公司", GOOD_B, True, None, False),
                ("丙运输队", None, False, "13800000000", True),
            ]


def test_bad_encoding_names_the_line_and_stores_nothing(db):
    data = COMPANIES_CSV.encode("utf-8").replace("丙运输队".encode(), b"\xff\xfe\x80bad")
    errors = refused(db, "companies", data)
    at = data.index(b"\xff")
    assert errors == [
        f"line 4: the text is neither UTF-8 nor GBK (byte {at}); save the file "
        "as 'CSV UTF-8' or as an Excel workbook (.xlsx)"
    ]
    assert count(db, "companies") == 0


def test_every_bad_row_is_named_and_nothing_is_stored(db):
    run(db, "companies", COMPANIES_CSV.encode())
    data = (
        "车牌号,车牌颜色,企业统一社会信用代码\n"
        f"粤B12345,黄色,{GOOD_A}\n"
        f"粤B1234,黄色,{GOOD_A}\n"  # malformed plate
        f"粤b 12345,蓝色,{GOOD_A}\n"  # the same plate as line 2 once normalised
        "粤B55555,紫色,91440300MA5DC0L4X9\n"  # unknown colour, unknown company
        "粤B66666,,12345\n"  # a company code nobody has
    ).encode()
    errors = refused(db, "trucks", data)
    assert errors == [
        "line 3, column A (车牌号): malformed plate '粤B1234': expected e.g. 粤B12345 "
        "(province, letter, 5-6 characters)",
        "line 4, column A (车牌号): plate 粤B12345 already given on line 2",
        "line 5, column B (车牌颜色): unknown plate colour '紫色': expected one of 黄色, 蓝色, "
        "绿色, 黄绿色, 白色, 黑色",
        "line 5, column C (企业统一社会信用代码): no registered company has credit code "
        "91440300MA5DC0L4X9",
        "line 6, column C (企业统一社会信用代码): no registered company has credit code 12345",
    ]
    assert count(db, "trucks") == 0


def test_wrong_credit_codes(db):
    data = (
        "企业名称,统一社会信用代码\n"
        f"甲,{BAD_CHECK}\n"  # check character fails: stored and flagged
        "乙,9144030OMA5DC0L4X\n"  # malformed (17 characters, an O): refused
        f"丙,{BAD_CHECK.lower()}\n"  # the same code as line 2
    ).encode()
    assert refused(db, "companies", data) == [
        "line 3, column B (统一社会信用代码): malformed credit code '9144030OMA5DC0L4X': "
        "expected 18 characters of 0-9 and A-Z without I, O, S, V, Z (GB 32100-2015)",
        f"line 4, column B (统一社会信用代码): credit code {BAD_CHECK} already given on line 2",
    ]
    assert count(db, "companies") == 0
    report = run(db, "companies", data, skip_bad=True)
    assert (report.created, len(report.skipped)) == (1, 2)
    assert report.flagged == [
        f"line 2, column B (统一社会信用代码): {BAD_CHECK} fails the GB 32100 check character: "
        "stored and flagged, please verify it"
    ]
    with db.cursor() as cur:
        cur.execute("SELECT name, credit_code, credit_code_valid FROM companies")
        assert cur.fetchall() == [("甲", BAD_CHECK, False)]


def test_header_problems(db):
    assert refused(db, "trucks", "车牌,颜色色\n粤B12345,黄色\n".encode()) == [
        "line 1, column B: unknown column '颜色色'; expected 车牌号 (plate), 车牌颜色 "
        "(plate_color), 挂车号牌 (trailer_plate), 企业统一社会信用代码 (company_credit_code), "
        "企业编号 (company_id), 企业名称 (company), 是否有效 (active)"
    ]
    assert refused(db, "terminals", "终端编号,绑定开始\n".encode()) == [
        "line 1: the column 车牌号 (plate) is missing"
    ]


def test_terminal_rows_are_checked_against_trucks_and_each_other(db):
    seed(db)
    before = count(db, "terminals")
    data = (
        "终端编号,车牌号,绑定开始,绑定结束\n"
        "T300,粤B99999,2026-01-01,\n"  # unknown plate
        "T100,粤B45678,2026-02-01,\n"  # T100 is on 粤B12345 then
        "T400,粤B45678,2026-05-01,2026-04-01\n"  # ends before it starts
        "T500,粤B45678,2026-05-01,\n"
        "T500,粤B12345,2026-07-01,\n"  # overlaps the row above (a different truck)
        "T6 00,粤B45678,yesterday,\n"
    ).encode()
    assert refused(db, "terminals", data) == [
        "line 2, column B (车牌号): no registered truck has plate 粤B99999",
        "line 3, column A (终端编号): device T100 is bound to another truck from 2026-01-01 "
        "08:00 in that period",
        "line 4, column D (绑定结束): must be after the start of the binding",
        "line 6, column A (终端编号): device T500 is bound to another truck from 2026-05-01 "
        "00:00 in that period",
        "line 7, column A (终端编号): 'T6 00': expected 1-64 letters, digits or _ . : -",
        "line 7, column C (绑定开始): 'yesterday' is not a time: expected e.g. 2026-03-01 08:00 "
        "(city time) or ISO with an offset",
    ]
    assert count(db, "terminals") == before


def test_reimport_updates_by_natural_key_and_reports_unchanged(db):
    seed(db)
    with db.cursor() as cur:
        cur.execute("SELECT id, updated_at FROM trucks ORDER BY id")
        stamps = cur.fetchall()
    report = run(
        db,
        "trucks",
        (
            "车牌号,车牌颜色,挂车号牌,企业统一社会信用代码\n"
            f"粤B12345,黄色,粤B1234挂,{GOOD_A}\n"  # as stored
            f"粤B23456,绿色,,{GOOD_B}\n"  # colour changes
            f"粤B77777,,,{GOOD_B}\n"  # new
        ).encode(),
    )
    assert (report.created, report.updated, report.unchanged) == (1, 1, 1)
    with db.cursor() as cur:
        cur.execute("SELECT id, updated_at FROM trucks WHERE id = %s", (stamps[0][0],))
        assert cur.fetchone() == stamps[0]  # an unchanged row is not written
        # No active column in the file: 粤B23456 stays deactivated.
        cur.execute("SELECT plate_color, active FROM trucks WHERE plate = '粤B23456'")
        assert cur.fetchone() == ("green", False)
    again = run(db, "companies", COMPANIES_CSV.encode("gbk"))
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)


def test_skip_bad_stores_the_good_rows(db):
    seed(db)
    report = run(
        db,
        "trucks",
        "车牌号,企业名称\n粤B88888,丙运输队\n粤B99999,没有这家\n".encode(),
        skip_bad=True,
    )
    assert (report.created, report.skipped) == (
        1,
        ["line 3, column B (企业名称): no registered company is named '没有这家'"],
    )
    with db.cursor() as cur:
        cur.execute(
            "SELECT c.name FROM trucks t JOIN companies c ON c.id = t.company_id "
            "WHERE plate = '粤B88888'"
        )
        assert cur.fetchone() == ("丙运输队",)
        cur.execute("SELECT count(*) FROM trucks WHERE plate = '粤B99999'")
        assert cur.fetchone() == (0,)


def test_a_dry_run_counts_and_writes_nothing(db):
    report = run(db, "companies", COMPANIES_CSV.encode(), dry_run=True)
    assert (report.created, report.stored) == (3, False)
    assert count(db, "companies") == 0


def _exports(db) -> dict[str, list[dict]]:
    with db.cursor() as cur:
        return {
            kind: export_records(cur, kind, TZ) for kind in ("companies", "trucks", "terminals")
        }


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_identity(db, fmt):
    seed(db)
    with db.cursor() as cur:  # a flagged code survives the round trip
        cur.execute(
            "UPDATE companies SET credit_code = %s, credit_code_valid = false "
            "WHERE name = '甲运输有限公司'",
            (BAD_CHECK,),
        )
    db.commit()
    first = _exports(db)
    files = {kind: write_table(kind, records, fmt) for kind, records in first.items()}
    # Into the same registry: every row unchanged.
    for kind, data in files.items():
        report = run(db, kind, data, f"x.{fmt}")
        assert (report.created, report.updated, report.unchanged) == (0, 0, len(first[kind]))
    # Into an empty registry: the same registry comes out.
    with db.cursor() as cur:
        cur.execute("TRUNCATE companies, trucks, terminals RESTART IDENTITY CASCADE")
    db.commit()
    for kind in ("companies", "trucks", "terminals"):
        run(db, kind, files[kind], f"x.{fmt}")
    assert _exports(db) == first
    if fmt != "xlsx":  # a workbook carries its creation time; its cells are compared above
        assert {kind: write_table(kind, r, fmt) for kind, r in _exports(db).items()} == files
    with db.cursor() as cur:
        cur.execute("SELECT credit_code_valid FROM companies WHERE credit_code = %s", (BAD_CHECK,))
        assert cur.fetchone() == (False,)
        cur.execute("SELECT valid_to FROM terminals WHERE device_id = 'T100' AND model = 'JT808-A'")
        assert cur.fetchone()[0] == dt.datetime(2026, 6, 1, 0, 0, 30, 250000, tzinfo=dt.UTC)


def test_xlsx_numbers_and_dates_from_excel(db, tmp_path):
    run(db, "companies", COMPANIES_CSV.encode())
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["终端编号", "车牌号", "绑定开始"])
    sheet.append([13912345678, "粤B12345", dt.datetime(2026, 3, 1, 8, 0)])
    sheet.append(["T2", "粤B12345", 1.5e17])
    book.save(path := tmp_path / "t.xlsx")
    with db.cursor() as cur:
        cur.execute("INSERT INTO trucks (plate) VALUES ('粤B12345')")
    db.commit()
    errors = refused(db, "terminals", path.read_bytes(), "t.xlsx")
    assert errors == [
        "line 3, column C (绑定开始): the spreadsheet stored 1.5e+17 as a number and may have "
        "lost digits: format the column as text"
    ]
    sheet.delete_rows(3)
    book.save(path)
    run(db, "terminals", path.read_bytes(), "t.xlsx")
    with db.cursor() as cur:
        cur.execute("SELECT device_id, valid_from FROM terminals")
        assert cur.fetchall() == [("13912345678", dt.datetime(2026, 3, 1, 0, 0, tzinfo=dt.UTC))]


def test_templates_have_the_chinese_headers():
    assert template("trucks", "csv").decode("utf-8-sig").splitlines()[0] == (
        "车牌号,车牌颜色,挂车号牌,企业统一社会信用代码,企业编号,企业名称,是否有效"
    )
    import io

    book = openpyxl.load_workbook(io.BytesIO(template("companies", "xlsx")))
    assert [c.value for c in book.worksheets[0][1]] == [
        "企业名称",
        "统一社会信用代码",
        "法定代表人",
        "联系电话",
        "是否有效",
    ]
    assert book.sheetnames == ["companies", "说明"]


def test_cli_import_export(db, database_url, tmp_path):
    env = {"MUCK_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}

    def muck(*args):
        return subprocess.run(
            [sys.executable, "-m", "muck", "registry", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    companies = tmp_path / "companies.csv"
    companies.write_bytes(COMPANIES_CSV.encode("gbk"))
    bad = tmp_path / "bad.csv"
    bad.write_text(f"企业名称,统一社会信用代码\n,{GOOD_A}\n", encoding="utf-8")
    result = muck("import", "companies", str(bad))
    assert result.returncode == 1
    assert "line 2, column A (企业名称): the company name is required" in result.stderr
    result = muck("import", "companies", str(companies))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("companies: 3 created, 0 updated, 0 unchanged")
    out = tmp_path / "out.json"
    assert muck("export", "companies", str(out)).returncode == 0
    assert {c["name"] for c in json.loads(out.read_text())} == {
        "甲运输有限公司",
        "乙运输有限公司",
        "丙运输队",
    }
    assert muck("template", "trucks", str(tmp_path / "t.xlsx")).returncode == 0
    result = muck("import", "companies", str(out))
    assert result.stdout.strip().endswith("0 created, 0 updated, 3 unchanged")
