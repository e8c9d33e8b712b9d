"""The case's notices as PDF: the 行政处罚告知书 (before the decision: the facts, the
intended penalty and the party's right to state their case) and the 行政处罚决定书 (the
decision). HTML templates (credit/templates/) rendered by WeasyPrint with the Noto CJK fonts
embedded, as the evidence pack is (evidence/pack.py), with an evidence summary of every
violation: the track image and sensor chart drawn from its evidence record, times,
positions, sensor states and checksum.

Each notice generated is a case event ('notice') with its SHA-256, in the transaction that
read the case.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from core.db import transaction
from credit.cases import CaseError, case_violations, get_case, record_notice
from credit.facts import summarise
from evidence.pack import tz_label

TEMPLATES = Path(__file__).with_name("templates")
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)
# notice → (title, template, whether it needs a decision)
NOTICES = {
    "advance": ("行政处罚告知书", "notice_advance.html", False),
    "decision": ("行政处罚决定书", "notice_decision.html", True),
}


def _money(value: decimal.Decimal | None, scale: int = 1) -> str:
    if value is None:
        return ""
    amount = value / scale
    return f"{amount:,.2f}" if scale == 1 else f"{amount.normalize():f}"


def notice_html(cur, settings: Any, case_id: int, notice: str) -> str:
    """The notice's HTML; CaseError when the case does not exist or is not that far (a
    decision notice needs a decision). A withdrawn case's notices carry a banner saying so."""
    if notice not in NOTICES:
        raise CaseError(f"unknown notice {notice!r}; expected one of {', '.join(NOTICES)}")
    title, template, needs_decision = NOTICES[notice]
    case = get_case(cur, case_id)
    if case is None:
        raise CaseError(f"case {case_id} does not exist")
    if needs_decision and case["decided_at"] is None:
        raise CaseError(
            f"case {case['case_no']} is {case['status']}: the {title} is made once it is decided"
        )
    tz = str(settings.city["timezone"])
    zone = ZoneInfo(tz)
    cases = settings["cases"]
    violations = [v for v in case_violations(cur, case_id) if v["active"]] or case_violations(
        cur, case_id
    )
    evidence = [summarise(cur, settings, v, drawings=True) for v in violations]
    today = dt.datetime.now(zone).date()
    number = case["decision_no"] if notice == "decision" else case["case_no"]
    return _ENV.get_template(template).render(
        title=title,
        number=number,
        case=case,
        authority=case["authority_name"] or cases["authority_name"],
        plates=sorted({v["plate"] for v in violations}),
        evidence=evidence,
        tzlabel=tz_label(tz),
        fine_yuan=_money(case["fine_yuan"]),
        fine_wan=_money(case["fine_yuan"], 10_000),
        statement_days=cases["statement_days"],
        address=cases["authority_address"],
        phone=cases["authority_phone"],
        today=f"{today.year}年{today.month}月{today.day}日",
        decision_date=_cn_date(case["decision_date"]),
        withdrawn_on=_cn_date(case["withdrawn_at"].astimezone(zone).date())
        if case["withdrawn_at"]
        else "",
    )


def _cn_date(day: dt.date | None) -> str:
    return f"{day.year}年{day.month}月{day.day}日" if day else ""


def render_notice(conn, settings: Any, case_id: int, notice: str, actor: str) -> bytes:
    """The notice as PDF, recorded as a case event with its checksum. Raises CaseError."""
    from weasyprint import HTML  # imported here: loading Pango takes a moment

    with transaction(conn) as cur:
        html = notice_html(cur, settings, case_id, notice)
        pdf = HTML(string=html, base_url=str(TEMPLATES)).write_pdf()
        record_notice(cur, case_id, actor, notice, hashlib.sha256(pdf).hexdigest(), len(pdf))
    return pdf
