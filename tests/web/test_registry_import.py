"""The dashboard's bulk registry upload, templates and export, for administrators."""

from __future__ import annotations

import io
import json
import re

import pytest

from tests.registry.test_bulk import COMPANIES_CSV, GOOD_A
from tests.web.test_dashboard import (  # noqa: F401 - app, users, as_role are fixtures
    _audit,
    _post_form,
    app,
    as_role,
    close_app,
    make_app,
    users,
    web_settings,
)

pytestmark = pytest.mark.services


def _upload(client, kind: str, data: bytes, name: str, **fields):
    return _post_form(
        client,
        f"/registry/{kind}/import",
        {"file": (io.BytesIO(data), name), **fields},
        content_type="multipart/form-data",
    )


def test_upload_shows_every_bad_row_and_stores_nothing(as_role, db):  # noqa: F811
    client = as_role("admin")
    resp = _upload(client, "companies", COMPANIES_CSV.encode("gbk"), "企业.csv")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "新增 3 条，更新 0 条，未变 0 条" in html
    ((_, _, _, after),) = _audit(db, "companies.import")
    assert (after["file"], after["created"]) == ("企业.csv", 3)
    bad = f"车牌号,企业统一社会信用代码\n粤B1234,{GOOD_A}\n粤B12345,91440300MA5DC0L4X9\n"
    resp = _upload(client, "trucks", bad.encode("gbk"), "trucks.csv")
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert "line 2, column A (车牌号): malformed plate" in html
    assert "line 3, column B (企业统一社会信用代码): no registered company has credit code" in html
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM trucks")
        assert cur.fetchone()[0] == 0
    resp = _upload(client, "trucks", bad.encode(), "trucks.csv", skip_bad="y")
    assert resp.status_code == 200 and 'class="skipped"' in resp.get_data(as_text=True)


def test_templates_and_export_download(as_role, db):  # noqa: F811
    client = as_role("admin")
    _upload(client, "companies", COMPANIES_CSV.encode(), "c.csv")
    resp = client.get("/registry/trucks/template?format=csv")
    assert resp.status_code == 200
    assert resp.data.decode("utf-8-sig").startswith("车牌号,车牌颜色")
    assert "attachment" in resp.headers["Content-Disposition"]
    assert client.get("/registry/trucks/template?format=xlsx").data[:2] == b"PK"
    exported = client.get("/registry/companies/export?format=json").get_json()
    assert {c["name"] for c in exported} == {"甲运输有限公司", "乙运输有限公司", "丙运输队"}
    assert client.get("/registry/companies/export?format=pdf").status_code == 400
    # the export uploads back unchanged
    csv_export = client.get("/registry/companies/export?format=csv").data
    resp = _upload(client, "companies", csv_export, "registry-companies.csv")
    assert resp.status_code == 200
    ((_, _, _, first), (_, _, _, second)) = _audit(db, "companies.import")
    assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 3)
    assert json.dumps(first)  # the audit rows are plain JSON


def test_oversize_upload_is_refused_on_the_page(db, database_url, users):  # noqa: F811
    from tests.web.test_dashboard import login

    small = make_app(database_url, MUCK_SETTINGS=web_settings(database_url, max_upload_bytes=200))
    try:
        client = small.test_client()
        login(client, "admin")
        resp = _upload(client, "companies", COMPANIES_CSV.encode() * 3, "big.csv")
        assert resp.status_code == 400
        assert "200" in resp.get_data(as_text=True)
        with db.cursor() as cur:
            cur.execute("SELECT count(*) FROM companies")
            assert cur.fetchone()[0] == 0
    finally:
        close_app(small)


def test_an_xlsx_zip_bomb_is_refused_on_the_page(as_role, db):  # noqa: F811
    """An .xlsx is a ZIP: a small upload that unpacks to 80 MB (a zip bomb) is refused
    before openpyxl opens it, with the reason on the page, and nothing is stored."""
    import zipfile

    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["企业名称", "统一社会信用代码"])
    plain = io.BytesIO()
    book.save(plain)
    bomb = io.BytesIO()
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            out.writestr(item, src.read(item))
        out.writestr("xl/media/padding.bin", b"\0" * (80 * 1024 * 1024))
    assert len(bomb.getvalue()) < 1024 * 1024  # well under the upload limit
    resp = _upload(as_role("admin"), "companies", bomb.getvalue(), "企业.xlsx")
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert re.search(r"the workbook unpacks to 8\d,\d{3},\d{3} bytes, more than", html), html
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM companies")
        assert cur.fetchone()[0] == 0
