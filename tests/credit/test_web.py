"""The credit pages through Flask's test client on the real database: what each role sees
and may do (each refusal proved), the explanation of a score at a past date, the listing
notice as PDF (its text extracted), exports downloaded and downloaded again, and the flags
on the live map and truck pages."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re

import pypdf
import pytest

from credit.lists import evaluate, list_entries
from tests.credit.history import case, company, violation
from tests.evidence.test_evidence import embedded_fonts
from tests.web.test_dashboard import ROLES, add_user, close_app, csrf_of, login, make_app

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def app(db, database_url):
    app = make_app(database_url)
    yield app
    close_app(app)


@pytest.fixture
def as_role(app, db):
    for role in ROLES:
        add_user(db, role, role)

    def client_for(role: str):
        client = app.test_client()
        assert login(client, role).status_code == 302
        return client

    return client_for


@pytest.fixture
def listed(db, settings):
    """A company with three decided dumping cases, evaluated: a pending blacklisting."""
    cid, (truck,) = company(db, plates=("粤B10001",))
    other, _ = company(db, "守信运输公司", None, plates=("粤B10009",))
    cases = []
    for i in range(3):
        v = violation(db, settings, truck, "illegal_dumping", NOW - dt.timedelta(days=9 - i))
        cases.append(case(db, cid, [v], decided_at=NOW - dt.timedelta(days=8 - i)))
    evaluate(db, settings)
    (entry,) = list_entries(db, subject="company")
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO truck_state (truck_id, device_id, fix_time, received_at, lat, lon,
                   speed_kmh, load, updated_at)
               VALUES (%s, 'D1', now(), now(), 22.55, 114.06, 20, 'full', now())""",
            (truck,),
        )
    db.commit()
    return {"company": cid, "other": other, "truck": truck, "entry": entry["id"], "cases": cases}


def post(client, url, **data):
    token = csrf_of(client.get("/credit/").get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **data})


def test_overview_ranks_companies_and_only_credit_officers_sign_off(as_role, listed, db):
    page = as_role("supervisor").get("/credit/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    # Lowest score first, with an inline SVG sparkline and no script source.
    assert html.index(f'id="company-{listed["company"]}"') < html.index(
        f'id="company-{listed["other"]}"'
    )
    assert '<svg class="spark"' in html and '<script src="http' not in html
    assert f'id="pending-{listed["entry"]}"' in html
    assert f'id="signoff-{listed["entry"]}"' not in html  # a supervisor reads only
    url = f"/credit/lists/{listed['entry']}/sign-off"
    for role in ("supervisor", "enforcement"):
        assert post(as_role(role), url).status_code == 403, role
    assert list_entries(db, subject="company")[0]["status"] == "pending"
    officer = as_role("credit")
    assert f'id="signoff-{listed["entry"]}"' in officer.get("/credit/").get_data(as_text=True)
    done = post(officer, url)
    assert done.status_code == 303
    (entry,) = list_entries(db, subject="company")
    assert entry["status"] == "active" and entry["signed_off_by"] == "credit"
    with db.cursor() as cur:
        cur.execute("SELECT username, action FROM audit_log WHERE entity = 'credit_list_entries'")
        assert cur.fetchall() == [("credit", "credit_list.sign_off")]
    db.rollback()
    again = post(officer, url)  # a second sign-off is refused with the reason, not a 500
    assert again.status_code == 303
    assert "not waiting for sign-off" in officer.get("/credit/").get_data(as_text=True)
    html = officer.get("/credit/").get_data(as_text=True)
    black = html.split('id="list-black"')[1].split("</table>")[0]
    assert "深圳某某运输有限公司" in black


def test_removal_and_rejection_need_a_reason(as_role, listed, db):
    officer = as_role("credit")
    url = f"/credit/lists/{listed['entry']}"
    post(officer, url + "/reject", note=" ")
    assert list_entries(db, subject="company")[0]["status"] == "pending"
    post(officer, url + "/sign-off")
    assert (
        post(as_role("enforcement"), url + "/remove", reason="credit_repair", note="x").status_code
        == 403
    )
    post(officer, url + "/remove", reason="credit_repair", note="信用修复已核准")
    (entry,) = list_entries(db, subject="company")
    assert entry["status"] == "removed" and entry["removal_reason"] == "credit_repair"


def test_company_page_explains_the_score_then_and_now(as_role, listed, db):
    client = as_role("supervisor")
    html = client.get(f"/credit/companies/{listed['company']}").get_data(as_text=True)
    assert re.search(r'id="score">70<', html)
    assert html.count('class="line-violation"') == 3 and 'id="score-chart"' in html
    assert "粤B10001" in html and "深城管罚" in html
    before = (NOW - dt.timedelta(days=30)).date().isoformat()
    past = client.get(f"/credit/companies/{listed['company']}?at={before}").get_data(as_text=True)
    assert re.search(r'id="score">100<', past)
    bad = client.get(f"/credit/companies/{listed['company']}?at=May")
    assert bad.status_code == 400 and 'id="at-error"' in bad.get_data(as_text=True)
    assert client.get("/credit/companies/999999").status_code == 404


def test_listing_notice_pdf_text(as_role, listed):
    assert (
        as_role("supervisor").get(f"/credit/lists/{listed['entry']}/notice.pdf").status_code == 403
    )
    resp = as_role("credit").get(f"/credit/lists/{listed['entry']}/notice.pdf")
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    reader = pypdf.PdfReader(io.BytesIO(resp.data))
    text = "".join(page.extract_text() for page in reader.pages)
    compact = re.sub(r"\s+", "", text)
    assert "列入失信黑名单告知书" in compact
    assert "深圳某某运输有限公司" in compact and "91110000600037341L" in compact
    assert "申诉" in compact
    fonts = {name.replace("-", "") for name in embedded_fonts(reader)}
    assert any("MuckWatchSerifCJKSC" in name for name in fonts), fonts  # the fast serif


def test_exports_page_downloads_and_downloads_again(as_role, listed, db):
    assert as_role("supervisor").get("/credit/exports").status_code == 403
    assert post(as_role("enforcement"), "/credit/exports", kind="penalties").status_code == 403
    officer = as_role("credit")
    assert officer.get("/credit/exports").status_code == 200
    first = (NOW - dt.timedelta(days=30)).date().isoformat()
    last = NOW.date().isoformat()
    resp = post(
        officer, "/credit/exports", kind="penalties", format="csv", **{"from": first, "to": last}
    )
    assert resp.status_code == 200 and resp.data.startswith(b"\xef\xbb\xbf")
    assert resp.headers["X-Content-SHA256"] == hashlib.sha256(resp.data).hexdigest()
    assert resp.data.decode("utf-8-sig").count("深圳某某运输有限公司") == 3
    page = officer.get("/credit/exports").get_data(as_text=True)
    (export_id,) = re.findall(r'id="download-(\d+)"', page)
    again = officer.get(f"/credit/exports/{export_id}/download")
    assert again.data == resp.data
    bad = post(
        officer, "/credit/exports", kind="penalties", format="csv", **{"from": "x", "to": last}
    )
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.get_data(as_text=True)


def test_listed_company_trucks_are_flagged_on_the_map_and_truck_pages(as_role, listed):
    officer = as_role("credit")
    post(officer, f"/credit/lists/{listed['entry']}/sign-off")
    client = as_role("supervisor")
    live = client.get("/api/v1/trucks/live").get_json()
    assert live["listed"]["companies"] == {str(listed["company"]): "black"}
    delta = client.get(f"/api/v1/trucks/live?since={live['cursor']}").get_json()
    assert delta["listed"]["companies"] == {str(listed["company"]): "black"}
    trucks = client.get("/trucks/?q=粤B10001").get_data(as_text=True)
    assert 'class="credit-flag list-black"' in trucks
    track = client.get(f"/trucks/{listed['truck']}/track").get_data(as_text=True)
    assert 'id="credit-flag"' in track
