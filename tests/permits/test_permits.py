"""Permits: import (CSV/JSON, Chinese headers, whole-file rejection), storage, catalogue,
validity and operating hours in city time, CLI."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from core.config import load_settings
from core.db import transaction
from geofence.model import Zone
from geofence.store import upsert_zones
from permits.catalog import PermitCatalog
from permits.io import (
    PermitImportError,
    parse_permits_csv,
    parse_permits_json,
    read_permits_file,
)
from permits.store import get_permit, import_permits, list_permits, revoke_permit, set_status
from registry.service import upsert_company, upsert_truck

TZ = ZoneInfo("Asia/Shanghai")
CREDIT = "91440300MA5EXAMPLE"  # fails the check character: stored and flagged, still usable


def square(lon: float, lat: float, half: float = 0.002) -> dict:
    ring = [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
        [lon - half, lat - half],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


def make_registry(conn, plates=("粤B10001", "粤B10002")) -> dict[str, int]:
    """A company, trucks, and one zone of each kind a permit refers to."""
    upsert_zones(
        conn,
        [
            Zone("SITE-A", "site", "工地A", square(114.06, 22.55)),
            Zone("SITE-B", "site", "工地B", square(114.08, 22.56)),
            Zone("DISP-1", "disposal", "消纳场1", square(114.10, 22.60)),
            Zone("DISP-2", "disposal", "消纳场2", square(114.12, 22.61)),
            Zone(
                "ROUTE-1",
                "route",
                "路线1",
                {"type": "LineString", "coordinates": [[114.06, 22.55], [114.10, 22.60]]},
                attributes={"width_m": 50.0},
            ),
        ],
    )
    ids = {}
    with transaction(conn) as cur:
        company = upsert_company(cur, "深圳某某运输有限公司", CREDIT)
        upsert_company(cur, "另一家运输公司", None)
        for plate in plates:
            ids[plate] = upsert_truck(cur, plate, company)
    ids["company"] = company
    return ids


CSV_ZH = (
    "\ufeff核准编号,运输企业,统一社会信用代码,车牌号,出土工地,消纳场,核准路线,作业时段,"
    "有效期起,有效期止,核发机关,备注\n"
    "深建渣准〔2026〕0123号,深圳某某运输有限公司,91440300MA5EXAMPLE,粤B10001；粤B10002,SITE-A,"
    "DISP-1、DISP-2,ROUTE-1,21:00-04:00,2026-03-01,2026-03-31,深圳市住房和建设局,夜间运输\n"
)


def test_csv_with_chinese_headers_and_bom_imports_and_reads_back(db):
    ids = make_registry(db)
    records = parse_permits_csv(CSV_ZH.lstrip("\ufeff"))
    assert import_permits(db, records) == {"inserted": 1, "updated": 0}
    permit = get_permit(db, "深建渣准〔2026〕0123号")
    assert permit is not None
    assert permit.company_id == ids["company"]
    assert permit.plates == ("粤B10001", "粤B10002")
    assert permit.origin_site == "SITE-A"
    assert permit.disposal_sites == ("DISP-1", "DISP-2")
    assert permit.routes == ("ROUTE-1",)
    assert permit.operating_hours == [
        {"days": [1, 2, 3, 4, 5, 6, 7], "start": "21:00", "end": "04:00"}
    ]
    assert (permit.valid_from, permit.valid_to) == (dt.date(2026, 3, 1), dt.date(2026, 3, 31))
    assert permit.status == "active"
    assert permit.authority == "深圳市住房和建设局"


def test_read_file_strips_bom_and_detects_format(tmp_path):
    path = tmp_path / "permits.csv"
    path.write_bytes(CSV_ZH.encode("utf-8"))
    (record,) = read_permits_file(path)
    assert record.number == "深建渣准〔2026〕0123号"
    assert record.plates == ("粤B10001", "粤B10002")
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(CSV_ZH.lstrip("\ufeff").encode("gbk"))
    with pytest.raises(PermitImportError, match="not UTF-8"):
        read_permits_file(gbk)


def _json_permit(**overrides) -> dict:
    permit = {
        "number": "P-JSON-1",
        "company_credit_code": CREDIT,
        "trucks": ["粤B10001"],
        "origin_site": "SITE-A",
        "disposal_sites": ["DISP-1"],
        "routes": ["ROUTE-1"],
        "operating_hours": [{"start": "21:00", "end": "04:00", "weekdays": [1, 2, 3, 4, 5]}],
        "valid_from": "2026-03-01",
        "valid_to": "2026-03-31",
        "authority": "市城管局",
    }
    permit.update(overrides)
    return permit


def test_json_import_upserts_by_number_and_keeps_status(db):
    make_registry(db)
    first = parse_permits_json(json.dumps([_json_permit()], ensure_ascii=False))
    assert import_permits(db, first) == {"inserted": 1, "updated": 0}
    revoke_permit(db, "P-JSON-1", "伪造材料")
    again = parse_permits_json(
        json.dumps([_json_permit(disposal_sites=["DISP-2"], trucks=["粤B10002"])])
    )
    assert import_permits(db, again) == {"inserted": 0, "updated": 1}
    permit = get_permit(db, "P-JSON-1")
    assert permit.disposal_sites == ("DISP-2",)
    assert permit.plates == ("粤B10002",)
    assert permit.status == "revoked", "a re-import without a status must not un-revoke"
    explicit = parse_permits_json(json.dumps([_json_permit(status="有效")]))
    import_permits(db, explicit)
    assert get_permit(db, "P-JSON-1").status == "active"
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM permits")
        assert cur.fetchone()[0] == 1


def test_bad_csv_is_rejected_whole_with_line_and_field(db):
    make_registry(db)
    header = "number,company,trucks,origin_site,disposal_sites,valid_from,valid_to\n"
    good = "P-1,深圳某某运输有限公司,粤B10001,SITE-A,DISP-1,2026-03-01,2026-03-31\n"
    unknown_plate = "P-2,深圳某某运输有限公司,粤B77777,SITE-A,DISP-1,2026-03-01,2026-03-31\n"
    wrong_kind = "P-3,深圳某某运输有限公司,粤B10002,DISP-1,SITE-A,2026-03-01,2026-03-31\n"
    records = parse_permits_csv(header + good + unknown_plate + wrong_kind)
    with pytest.raises(PermitImportError) as caught:
        import_permits(db, records)
    text = str(caught.value)
    assert "nothing imported" in text
    assert "line 3, field 'trucks': not registered truck(s): 粤B77777" in text
    assert "line 4, field 'origin_site': zone 'DISP-1' is a disposal, not a site" in text
    assert "line 4, field 'disposal_sites': zone 'SITE-A' is a site, not a disposal" in text
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM permits")
        assert cur.fetchone()[0] == 0, "nothing of a bad file may be stored"


def test_form_errors_name_line_and_column_as_written():
    text = (
        "核准编号,运输企业,车牌号,出土工地,消纳场,有效期起,有效期止,作业时段\n"
        "P-1,公司,粤B10001,SITE-A,DISP-1,2026-03-01,2026-02-30,21:00-04:00\n"
        '"P-2",公司,"粤B1,XX",SITE-A,,2026-03-05,2026-03-01,25:00-04:00\n'
        "P-1,公司,粤B10001,SITE-A,DISP-1,2026-03-01,2026-03-31,\n"
    )
    with pytest.raises(PermitImportError) as caught:
        parse_permits_csv(text)
    errors = caught.value.errors
    assert any(e.startswith("line 2, field '有效期止': '2026-02-30' is not a date") for e in errors)
    assert any(e.startswith("line 3, field '车牌号': malformed plate 'XX'") for e in errors)
    assert any(e.startswith("line 3, field '消纳场': at least one disposal") for e in errors)
    assert any(e.startswith("line 3, field '作业时段':") for e in errors)
    assert any(e.startswith("line 3, field '有效期止': 2026-03-01 is before") for e in errors)
    assert any(
        e.startswith("line 4, field '核准编号': permit 'P-1' already given on line 2")
        for e in errors
    )
    with pytest.raises(PermitImportError, match="unknown column 'colour'"):
        parse_permits_csv("number,colour\nP-1,red\n")


def test_json_errors_carry_the_line_of_the_object():
    text = '[\n  {"number": "A", "trucks": "粤B10001", "origin_site": "S",\n' + (
        '   "disposal_sites": "D", "company": "C", "valid_from": "2026-01-01",'
        ' "valid_to": "2026-01-02"},\n'
        '  {"number": "B", "trucks": "粤B10001", "origin_site": "S", "disposal_sites": "D",\n'
        '   "company": "C", "valid_from": "2026-01-01"}\n]'
    )
    with pytest.raises(PermitImportError) as caught:
        parse_permits_json(text)
    assert caught.value.errors == ["line 4, field 'valid_to': a date is required (YYYY-MM-DD)"]
    with pytest.raises(PermitImportError, match="line 2, column"):
        parse_permits_json('[\n {"number": }\n]')


def test_company_by_name_must_be_unambiguous(db):
    make_registry(db)
    with transaction(db) as cur:
        upsert_company(cur, "另一家运输公司", None)  # a second company of that name
    records = parse_permits_json(
        json.dumps([_json_permit(company_credit_code=None, company="另一家运输公司")])
    )
    with pytest.raises(PermitImportError, match="2 companies are named"):
        import_permits(db, records)
    records = parse_permits_json(
        json.dumps([_json_permit(company_credit_code=None, company="不存在公司")])
    )
    with pytest.raises(PermitImportError, match="no registered company named"):
        import_permits(db, records)


def local(*args) -> float:
    return dt.datetime(*args, tzinfo=TZ).timestamp()


def test_catalog_validity_is_inclusive_local_dates_and_hours_cross_midnight(db):
    ids = make_registry(db)
    import_permits(db, parse_permits_csv(CSV_ZH.lstrip("\ufeff")))
    catalog = PermitCatalog(load_settings())
    assert catalog.refresh_if_changed(db) is True
    assert catalog.refresh_if_changed(db) is False
    truck = ids["粤B10001"]
    assert catalog.permits_for(truck, local(2026, 2, 28, 23, 59, 59)) == []
    (permit,) = catalog.permits_for(truck, local(2026, 3, 1, 0, 0, 0))
    assert permit.number == "深建渣准〔2026〕0123号"
    assert permit.origin_site == "SITE-A"
    assert permit.disposal_sites == ("DISP-1", "DISP-2")
    assert permit.routes == ("ROUTE-1",)
    assert permit.id > 0
    assert catalog.permits_for(truck, local(2026, 3, 31, 23, 59, 59)) == [permit]
    assert catalog.permits_for(truck, local(2026, 4, 1, 0, 0, 0)) == []
    assert catalog.permits_for(999999, local(2026, 3, 10, 12)) == []
    # 21:00-04:00 local, crossing midnight; start inside, end outside
    assert permit.operating_at(local(2026, 3, 10, 21, 0))
    assert permit.operating_at(local(2026, 3, 11, 3, 59, 59))
    assert not permit.operating_at(local(2026, 3, 11, 4, 0))
    assert not permit.operating_at(local(2026, 3, 10, 20, 59, 59))
    assert not permit.operating_at(local(2026, 3, 10, 12, 0))
    # 21:00 local is 13:00 UTC: the check is in city time, not UTC
    assert not permit.operating_at(dt.datetime(2026, 3, 10, 21, 0, tzinfo=dt.UTC).timestamp())
    t = [local(2026, 3, 10, 22), local(2026, 3, 10, 10), local(2026, 4, 2, 22)]
    assert permit.operating_mask(t).tolist() == [True, False, True]
    assert permit.valid_mask(t).tolist() == [True, True, False]
    assert catalog.has_permit_at([truck, truck, 12345], t).tolist() == [True, True, False]


def test_weekday_windows_and_no_hours_means_any_time(db):
    ids = make_registry(db)
    windows = [{"days": [5], "start": "21:00", "end": "04:00"}]
    import_permits(
        db,
        parse_permits_json(
            json.dumps(
                [
                    _json_permit(operating_hours=windows),
                    _json_permit(number="P-ANY", operating_hours=None, trucks=["粤B10002"]),
                ]
            )
        ),
    )
    catalog = PermitCatalog(load_settings())
    catalog.refresh_if_changed(db)
    friday = catalog.permit("P-JSON-1")
    # 2026-03-13 is a Friday: its window runs into Saturday morning
    assert friday.operating_at(local(2026, 3, 13, 23, 0))
    assert friday.operating_at(local(2026, 3, 14, 2, 0))
    assert not friday.operating_at(local(2026, 3, 14, 22, 0))
    assert not friday.operating_at(local(2026, 3, 12, 23, 0))
    anytime = catalog.permits_for(ids["粤B10002"], local(2026, 3, 14, 12, 0))[0]
    assert anytime.operating_hours == ()
    assert anytime.operating_at(local(2026, 3, 14, 12, 0))


def test_suspend_revoke_and_reload_on_change(db):
    ids = make_registry(db)
    import_permits(db, parse_permits_csv(CSV_ZH.lstrip("\ufeff")))
    catalog = PermitCatalog(load_settings())
    catalog.refresh_if_changed(db)
    at = local(2026, 3, 10, 22)
    number = "深建渣准〔2026〕0123号"
    assert len(catalog.permits_for(ids["粤B10001"], at)) == 1
    set_status(db, number, "suspended", "整改")
    assert catalog.refresh_if_changed(db) is True
    assert catalog.permits_for(ids["粤B10001"], at) == []
    set_status(db, number, "active")
    catalog.refresh_if_changed(db)
    assert len(catalog.permits_for(ids["粤B10001"], at)) == 1
    revoke_permit(db, number, "违规倾倒")
    catalog.refresh_if_changed(db)
    assert catalog.permits_for(ids["粤B10001"], at) == []
    with pytest.raises(ValueError, match="reason is required"):
        revoke_permit(db, number, " ")
    with pytest.raises(ValueError, match="no permit numbered"):
        revoke_permit(db, "NOPE", "x")


def test_list_filters_by_truck_and_valid_at(db):
    make_registry(db)
    import_permits(
        db,
        parse_permits_json(
            json.dumps(
                [
                    _json_permit(),
                    _json_permit(number="P-APR", valid_from="2026-04-01", valid_to="2026-04-30"),
                    _json_permit(number="P-B2", trucks=["粤B10002"]),
                ]
            )
        ),
    )
    assert {p.number for p in list_permits(db, plate="粤b10001")} == {"P-JSON-1", "P-APR"}
    when = dt.datetime(2026, 4, 1, 0, 30, tzinfo=TZ)  # 2026-03-31 16:30 UTC
    found = list_permits(db, plate="粤B10001", valid_at=when, city_tz="Asia/Shanghai")
    assert [p.number for p in found] == ["P-APR"]


@pytest.fixture
def runner(database_url, monkeypatch):
    monkeypatch.setenv("MUCK_DATABASE_URL", database_url)
    monkeypatch.delenv("MUCK_CONFIG", raising=False)
    from muck.cli import _register_subcommands, cli

    _register_subcommands()

    def run(*args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    yield run
    # click caches each command's help option with the names of the context it first ran
    # in (`-h, --help` under `muck`); forget them so docs rendered later in this session
    # (tests/muck/test_cli.py) are the same as from a fresh process.
    from muck.cli_docs import _walk

    for _, command in _walk(cli, ["muck"]):
        command._help_option = None


def test_cli_import_list_show_revoke(db, runner, tmp_path):
    make_registry(db)
    good = tmp_path / "permits.csv"
    good.write_bytes(CSV_ZH.encode("utf-8"))
    result = runner("permits", "import", str(good))
    assert result.exit_code == 0, result.output
    assert "1 inserted, 0 updated" in result.output
    result = runner("permits", "list", "--truck", "粤B10002", "--valid-at", "2026-03-31 23:00")
    assert result.exit_code == 0
    assert "深建渣准〔2026〕0123号" in result.output
    result = runner("permits", "list", "--valid-at", "2026-04-01")
    assert "深建渣准" not in result.output
    result = runner("permits", "show", "深建渣准〔2026〕0123号")
    assert result.exit_code == 0
    assert "21:00-04:00" in result.output and "DISP-1, DISP-2" in result.output
    result = runner("permits", "revoke", "深建渣准〔2026〕0123号", "--reason", "违规")
    assert result.exit_code == 0
    assert get_permit(db, "深建渣准〔2026〕0123号").status == "revoked"


def test_cli_errors_are_clean(db, runner, tmp_path):
    make_registry(db)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([_json_permit(origin_site="NOWHERE")]), encoding="utf-8")
    result = runner("permits", "import", str(bad))
    assert result.exit_code == 1
    assert "line 1, field 'origin_site': no zone with code 'NOWHERE'" in result.output
    assert "Traceback" not in result.output
    result = runner("permits", "import", "--dry-run", str(bad))
    assert result.exit_code == 1 and "no zone with code 'NOWHERE'" in result.output
    good = tmp_path / "good.json"
    good.write_text(json.dumps([_json_permit()]), encoding="utf-8")
    result = runner("permits", "import", "--dry-run", str(good))
    assert result.exit_code == 0 and "1 valid permits; nothing stored" in result.output
    assert list_permits(db) == []
    result = runner("permits", "import", str(tmp_path / "missing.csv"))
    assert result.exit_code == 1 and "cannot read the file" in result.output
    result = runner("permits", "show", "NOPE")
    assert result.exit_code == 1 and "no permit numbered" in result.output
    result = runner("permits", "revoke", "NOPE", "--reason", "x")
    assert result.exit_code == 1
    result = runner("permits", "list", "--valid-at", "yesterday")
    assert result.exit_code == 2 and "is not a time" in result.output


def test_example_files_import_against_the_example_zones(db):
    from pathlib import Path

    from geofence.io import read_zones_file

    root = Path(__file__).resolve().parents[2]
    upsert_zones(db, read_zones_file(root / "geofence" / "examples" / "zones.geojson"))
    with transaction(db) as cur:
        company = upsert_company(cur, "示范渣土运输有限公司", "91440300MA5DEMO01X")
        for i in range(8):
            upsert_truck(cur, f"粤B{10000 + i:05d}", company)
    csv_records = read_permits_file(root / "permits" / "examples" / "permits.csv")
    json_records = read_permits_file(root / "permits" / "examples" / "permits.json")
    assert import_permits(db, csv_records) == {"inserted": 2, "updated": 0}
    assert import_permits(db, json_records) == {"inserted": 2, "updated": 0}
    weekdays = get_permit(db, "深建渣准〔2026〕0124号")
    assert weekdays.operating_hours[1] == {"days": [6, 7], "start": "20:00", "end": "06:00"}
    assert get_permit(db, "深建渣准〔2026〕0126号").plates == ("粤B10006",)
