# ruff: noqa: F811  (pytest fixtures imported from other test modules)
"""Case pages through Flask's test client: open from selected violations, edit, decide,
publish, close, withdraw, notices; bad fields answered next to the field; the role matrix."""

from __future__ import annotations

import re

import pytest

from tests.credit.test_cases import fleet, statuses  # noqa: F401
from tests.web.test_dashboard import ROLES, app, as_role, csrf_of, users  # noqa: F401


def _case_of(db, vid):
    with db.cursor() as cur:
        cur.execute(
            """SELECT k.id, k.status FROM credit_cases k JOIN credit_case_violations cv
               ON cv.case_id = k.id WHERE cv.violation_id = %s AND cv.active""",
            (vid,),
        )
        row = cur.fetchone()
    db.rollback()
    return row


def _audit(db, action):
    with db.cursor() as cur:
        cur.execute("SELECT username, entity_id FROM audit_log WHERE action = %s", (action,))
        rows = cur.fetchall()
    db.rollback()
    return rows


def _post(client, url, page_url, **data):
    token = csrf_of(client.get(page_url).get_data(as_text=True))
    prefix = "decide-" if url.endswith("/decide") else ""
    return client.post(url, data={f"{prefix}csrf_token": token, **data})


def _error_next_to(html: str, field: str) -> str:
    match = re.search(rf'<span class="error" data-field="{field}">([^<]*)</span>', html)
    assert match, f"no message next to {field}"
    return match.group(1)


@pytest.fixture
def opened(as_role, db, fleet):
    """An officer selects two confirmed violations of one company on the list and opens a
    case; returns (client, case id)."""
    client = as_role("enforcement")
    listing = client.get("/violations/?status=confirmed").get_data(as_text=True)
    v = fleet["v"]
    for vid in (v["speed"], v["unsealed"]):
        assert f'id="select-{vid}"' in listing  # confirmed: selectable
    assert f'id="select-{v["new"]}"' not in listing
    page = client.get(f"/cases/new?v={v['speed']}&v={v['unsealed']}")
    assert page.status_code == 200 and "深圳市甲运输有限公司" in page.get_data(as_text=True)
    resp = _post(client, "/cases/new", "/cases/new",
                 violations=f"{v['speed']} {v['unsealed']}", note="同一企业两起")  # fmt: skip
    assert resp.status_code == 302
    case_id, status = _case_of(db, v["speed"])
    assert status == "open" and resp.headers["Location"].endswith(f"/cases/{case_id}")
    return client, case_id


def test_open_decide_publish_close_through_the_pages(db, settings, fleet, opened):
    client, case_id = opened
    v = fleet["v"]
    page = client.get(f"/cases/{case_id}").get_data(as_text=True)
    assert "粤B10001" in page and "违反《中华人民共和国道路交通安全法》第四十二条" in page
    assert 'id="notice-advance"' in page and 'id="notice-decision"' not in page
    assert _audit(db, "case.open") == [("enforcement", str(case_id))]
    # edit: a bad credit code format is kept and flagged, a long field refused at the field
    url = f"/cases/{case_id}"
    resp = _post(client, f"{url}/edit", url, party_name="深圳市甲运输有限公司",
                 party_credit_code="91110000600037341K", facts="改写的违法事实",
                 legal_basis="依据", penalty_category="", fine_yuan="")  # fmt: skip
    assert resp.status_code == 302
    page = client.get(url).get_data(as_text=True)
    assert 'id="code-invalid"' in page and "改写的违法事实" in page
    resp = _post(client, f"{url}/edit", url, party_name="", facts="x")
    assert resp.status_code == 400
    assert "the party needs a name" in _error_next_to(resp.get_data(as_text=True), "party_name")
    # decide: each refusal next to its field
    for data, field, message in (
        ({"decide-penalty_category": "罚款"}, "decide-fine_yuan", "needs its amount"),
        ({"decide-penalty_category": "罚款", "decide-fine_yuan": "abc"}, "decide-fine_yuan",
         "not an amount"),
        ({"decide-penalty_category": "警告", "decide-decision_date": "2099-01-01"},
         "decide-decision_date", "is in the future"),
        ({"decide-penalty_category": "警告", "decide-decision_date": "01/02/2026"},
         "decide-decision_date", "不是有效的日期"),
        ({}, "decide-penalty_category", "choose the penalty category"),
    ):  # fmt: skip
        resp = _post(client, f"{url}/decide", url, **data)
        assert resp.status_code == 400, data
        assert message in _error_next_to(resp.get_data(as_text=True), field), data
    assert _case_of(db, v["speed"])[1] == "open"
    resp = _post(client, f"{url}/decide", url, **{"decide-penalty_category": "罚款",
                 "decide-fine_yuan": "20000", "decide-decision_no": "深城管罚〔2026〕88号"})  # fmt: skip
    assert resp.status_code == 302
    page = client.get(url).get_data(as_text=True)
    assert (
        'data-status="decided"' in page and "深城管罚〔2026〕88号" in page and "20,000.00" in page
    )
    assert statuses(db, [v["speed"]])[v["speed"]] == ("case_opened", "深城管罚〔2026〕88号")
    # the decision notice is there now
    pdf = client.get(f"{url}/decision.pdf")
    assert (
        pdf.status_code == 200
        and pdf.data.startswith(b"%PDF")
        and pdf.mimetype == "application/pdf"
    )
    assert client.get(f"{url}/nonsense.pdf").status_code == 404
    assert _post(client, f"{url}/publish", url).status_code == 302
    resp = _post(client, f"{url}/publish", url)
    assert resp.status_code == 400
    assert "cannot publish case" in _error_next_to(resp.get_data(as_text=True), "note")
    assert _post(client, f"{url}/close", url, note="已缴纳").status_code == 302
    assert _case_of(db, v["speed"])[1] == "closed"
    assert {s for s, _ in statuses(db, [v["speed"], v["unsealed"]]).values()} == {"closed"}
    actions = re.findall(r'data-action="(\w+)"', client.get(url).get_data(as_text=True))
    assert actions == ["opened", "edited", "decided", "notice", "published", "closed"]
    assert [a for a, in _audit_actions(db)] == [
        "case.open", "case.edit", "case.decide", "case.publish", "case.close"
    ]  # fmt: skip


def _audit_actions(db):
    with db.cursor() as cur:
        cur.execute("SELECT action FROM audit_log WHERE action LIKE 'case.%' ORDER BY id")
        rows = cur.fetchall()
    db.rollback()
    return rows


def test_withdraw_needs_a_reason_and_releases(db, fleet, opened):
    client, case_id = opened
    v = fleet["v"]
    url = f"/cases/{case_id}"
    # the violation page names the case and refuses a dismissal until it is withdrawn
    vpage = client.get(f"/violations/{v['speed']}").get_data(as_text=True)
    assert f'href="/cases/{case_id}"' in vpage
    resp = _post(client, f"/violations/{v['speed']}/action", f"/violations/{v['speed']}",
                 action="dismiss", note="误报")  # fmt: skip
    assert resp.status_code == 400 and "withdraw the case first" in resp.get_data(as_text=True)
    resp = _post(client, f"{url}/withdraw", url, reason=" ")
    assert resp.status_code == 400
    assert _error_next_to(resp.get_data(as_text=True), "reason")
    assert _post(client, f"{url}/withdraw", url, reason="当事人非责任主体").status_code == 302
    assert _case_of(db, v["speed"]) is None
    assert statuses(db, [v["speed"]])[v["speed"]] == ("confirmed", None)
    page = client.get(url).get_data(as_text=True)
    assert 'data-status="withdrawn"' in page and "当事人非责任主体" in page
    assert 'id="form-withdraw"' not in page


def test_opening_refusals_are_shown_at_the_violations(as_role, db, fleet):
    client = as_role("enforcement")
    v = fleet["v"]
    for ids, message in (
        (f"{v['speed']} {v['other']}", "belong to different companies"),
        (f"{v['new']}", "only confirmed violations"),
        ("", "choose at least one confirmed violation"),
    ):
        resp = _post(client, "/cases/new", "/cases/new", violations=ids)
        assert resp.status_code == 400, ids
        assert message in _error_next_to(resp.get_data(as_text=True), "violations"), ids
    resp = _post(client, "/cases/new", "/cases/new", violations=str(v["loose"]))
    assert resp.status_code == 400
    assert "has no company" in _error_next_to(resp.get_data(as_text=True), "party_name")
    resp = _post(client, "/cases/new", "/cases/new", violations="1 x")
    assert resp.status_code == 400
    # nothing was stored by any refusal
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM credit_cases")
        assert cur.fetchone()[0] == 0
    db.rollback()
    # without the CSRF token: refused
    assert client.post("/cases/new", data={"violations": str(v["speed"])}).status_code == 400


def test_role_matrix(as_role, db, fleet, opened):
    _, case_id = opened
    v = fleet["v"]
    url = f"/cases/{case_id}"
    for role in ROLES:
        client = as_role(role)
        acts = role in ("enforcement", "admin")
        assert client.get("/cases/").status_code == 200, role  # everyone reads cases
        page = client.get(url)
        assert page.status_code == 200, role
        assert ('id="form-decide"' in page.get_data(as_text=True)) == acts, role
        assert 'id="nav-cases"' in client.get("/").get_data(as_text=True), role
        if acts:
            continue
        token = csrf_of(client.get("/").get_data(as_text=True))
        for path, data in (
            ("/cases/new", {"violations": str(v["other"])}),
            (f"{url}/edit", {"party_name": "x"}),
            (f"{url}/decide", {"decide-penalty_category": "警告"}),
            (f"{url}/publish", {}),
            (f"{url}/close", {}),
            (f"{url}/withdraw", {"reason": "x"}),
        ):
            resp = client.post(path, data={"csrf_token": token, "decide-csrf_token": token, **data})
            assert resp.status_code == 403, (role, path)
        assert client.get(f"{url}/advance.pdf").status_code == 403, role
        assert client.get(f"/cases/new?v={v['other']}").status_code == 403, role
        listing = client.get("/violations/?status=confirmed")
        assert 'id="case-select"' not in listing.get_data(as_text=True), role
    assert _case_of(db, v["speed"])[1] == "open"  # nothing moved
    assert as_role("supervisor").get("/cases/999999").status_code == 404
    assert as_role("supervisor").get("/cases/?status=lost").status_code == 400
