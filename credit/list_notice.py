"""The listing notice (列入名单告知书): the party's right to be told why it is listed and to
object. A PDF from an HTML template (WeasyPrint, the Noto CJK fonts embedded), as
evidence/pack.py makes the evidence pack."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from credit.exports import LIST_LABELS, credit_code_problem
from credit.lists import list_entries
from registry.validation import plate_problem

TEMPLATES = Path(__file__).with_name("templates")
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)
CODE_LABELS = {"company": "统一社会信用代码", "truck": "车牌号码", "driver": "驾驶证号"}


def notice_html(conn, settings: Any, entry_id: int) -> str | None:
    found = [e for e in list_entries(conn, limit=1_000_000) if e["id"] == entry_id]
    if not found:
        return None
    (entry,) = found
    with conn.cursor() as cur:
        cur.execute(
            """SELECT case_no, decision_no, decision_date, penalty_category FROM credit_cases
               WHERE id = ANY(%s) ORDER BY decision_date, id""",
            (entry["case_ids"],),
        )
        cases = [
            dict(
                zip(("case_no", "decision_no", "decision_date", "penalty_category"), r, strict=True)
            )
            for r in cur.fetchall()
        ]
    conn.rollback()
    subject = entry["subject_kind"]
    problem = None
    if subject == "company":
        problem = credit_code_problem(entry["credit_code"])
    elif subject == "truck":
        problem = plate_problem(entry["credit_code"] or "")
    today = dt.datetime.now(ZoneInfo(settings.city["timezone"]))
    return _ENV.get_template("list_notice.html").render(
        e=entry,
        cases=cases,
        list_label=LIST_LABELS[entry["list_type"]],
        code_label=CODE_LABELS[subject],
        code_problem=problem,
        issued_on=f"{today.year}年{today.month}月{today.day}日",
    )


def notice_pdf(conn, settings: Any, entry_id: int) -> bytes | None:
    """The notice of one list entry as PDF, or None if there is no such entry."""
    html = notice_html(conn, settings, entry_id)
    if html is None:
        return None
    from weasyprint import HTML  # imported here: loading Pango takes a moment

    return HTML(string=html, base_url=str(TEMPLATES)).write_pdf()
