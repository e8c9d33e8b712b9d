"""The case's notices as PDF, read back: Chinese text, the evidence summary, fonts embedded."""

from __future__ import annotations

import pytest

from core.db import transaction
from credit import cases as K
from credit.notices import notice_html, render_notice
from tests.credit.test_cases import VALID_CODE, fleet, open_  # noqa: F401
from tests.evidence.test_evidence import embedded_fonts, pdf_text


def flat(text: str) -> str:
    return text.replace(" ", "").replace("\n", "")


def test_advance_and_decision_notices_read_back_in_chinese(db, settings, fleet):  # noqa: F811
    v = fleet["v"]
    case_id = open_(db, settings, [v["speed"], v["unsealed"]])
    with pytest.raises(K.CaseError, match="is made once it is decided"):
        render_notice(db, settings, case_id, "decision", "officer1")
    text, reader = pdf_text(render_notice(db, settings, case_id, "advance", "officer1"))
    compact = flat(text)
    case = K.get_case(db.cursor(), case_id)
    db.rollback()
    for expected in (
        "行政处罚告知书",
        case["case_no"],
        "深圳市甲运输有限公司",
        VALID_CODE,
        "张三",
        "违法事实",
        "陈述和申辩",
        "5日内",
        "证据摘要",
        "超速",
        "未密闭运输",
        "粤B10001",
        "粤B10002",
        "2026-11-2308:30:00",  # the start in city time
        "北纬22.5",
        "车厢盖打开",
        "已固化",
        "《中华人民共和国道路交通安全法》第四十二条",
    ):
        assert expected in compact, expected
    with db.cursor() as cur:
        cur.execute("SELECT sha256 FROM evidence_records WHERE violation_id = %s", (v["speed"],))
        assert cur.fetchone()[0] in compact, "each violation's checksum is printed"
    db.rollback()
    fonts = {name.replace("-", "") for name in embedded_fonts(reader)}
    assert any("MuckWatchCJKSC" in n or "NotoSerifCJKSC" in n for n in fonts), fonts
    with transaction(db) as cur:
        number = K.decide(cur, settings, case_id, "officer2",
                          fields={"penalty_category": "罚款", "fine_yuan": "15000"})  # fmt: skip
    compact = flat(pdf_text(render_notice(db, settings, case_id, "decision", "officer2"))[0])
    for expected in (
        "行政处罚决定书",
        number,
        "处罚决定",
        "罚款",
        "人民币15,000.00元",
        "1.5万元",
        "十五日内",
        "行政复议",
        settings["cases"]["authority_name"],
    ):
        assert expected in compact, expected
    # every notice made is on the case's record, with its checksum
    events = [e for e in K.case_events(db.cursor(), case_id) if e["action"] == "notice"]
    db.rollback()
    assert [(e["actor"], e["after"]["notice"]) for e in events] == [
        ("officer1", "advance"),
        ("officer2", "decision"),
    ]
    assert all(len(e["after"]["sha256"]) == 64 for e in events)
    # a withdrawn case's notice says it is void (the same template: its HTML is enough)
    with transaction(db) as cur:
        K.withdraw(cur, case_id, "chief", "证据不足")
        html = notice_html(cur, settings, case_id, "decision")
    assert "撤销：证据不足" in html and "不发生法律效力" in html
