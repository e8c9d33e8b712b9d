"""The evidence pack: one PDF per violation (WeasyPrint: an HTML/CSS template to PDF, the
Noto CJK fonts found through fontconfig and embedded), and a ZIP of packs for a list.

Every export is written to the evidence audit trail (who, when, which record and checksum)
in the same transaction that reads the record.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from core.db import transaction
from evidence.render import sensor_svg, track_svg
from evidence.store import Record, audit, current_record

TEMPLATES = Path(__file__).with_name("templates")
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)
STATES = {
    "open": "打开",
    "closed": "关闭",
    "up": "举升",
    "down": "落下",
    "full": "满载",
    "half": "半载",
    "empty": "空载",
}


class NoEvidence(LookupError):
    """The violation has no evidence record yet (or does not exist)."""


def tz_label(tz: str) -> str:
    """How times are labelled: the zone's name and its UTC offset now, e.g. 'Asia/Shanghai
    UTC+08:00'."""
    offset = dt.datetime.now(ZoneInfo(tz)).strftime("%z")
    return f"{tz} UTC{offset[:3]}:{offset[3:]}"


def pack_html(settings: Any, record: Record, exported_by: str, exported_at: dt.datetime) -> str:
    evidence = record.evidence
    tz = evidence.timezone or str(settings.city["timezone"])
    zone = ZoneInfo(tz)
    margin = settings["evidence"]
    own = next((z for z in evidence.zones if z.role == "violation"), None)
    return _ENV.get_template("pack.html").render(
        e=evidence,
        f=evidence.facts,
        m=evidence.measured,
        sha256=record.sha256,
        version=record.version,
        t=lambda value: value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if value else "",
        tzlabel=tz_label(tz),
        zone_name=own.name if own else None,
        margin=f"{margin['margin_before_s']:g}/{margin['margin_after_s']:g} 秒",
        track_svg=track_svg(evidence, settings.city),
        sensor_svg=sensor_svg(evidence, tz),
        states=STATES,
        exported_by=exported_by,
        exported_at=exported_at,
    )


def render_pdf(settings: Any, record: Record, exported_by: str, exported_at=None) -> bytes:
    from weasyprint import HTML  # imported here: loading Pango takes a moment

    exported_at = exported_at or dt.datetime.now(dt.UTC)
    html = pack_html(settings, record, exported_by, exported_at)
    return HTML(string=html, base_url=str(TEMPLATES)).write_pdf()


def export_pdf(conn, settings: Any, violation_id: int, actor: str, via: str = "web") -> bytes:
    """The pack of one violation, audited ('export_pdf'). Raises NoEvidence."""
    with transaction(conn) as cur:
        record = current_record(cur, violation_id)
        if record is None:
            raise NoEvidence(f"violation {violation_id} has no evidence yet")
        pdf = render_pdf(settings, record, actor)
        audit(cur, "export_pdf", actor, violation_id, record, {"via": via, "bytes": len(pdf)})
    return pdf


def export_zip(
    conn, settings: Any, violation_ids: list[int], actor: str, via: str = "web"
) -> tuple[bytes, list[int]]:
    """A ZIP with one pack per violation that has evidence (`<id>_<plate>.pdf`), audited
    per violation ('export_zip'); returns it and the ids left out (no evidence yet)."""
    buffer, missing = io.BytesIO(), []
    with transaction(conn) as cur, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for vid in violation_ids:
            record = current_record(cur, vid)
            if record is None:
                missing.append(vid)
                continue
            pdf = render_pdf(settings, record, actor)
            plate = record.evidence.facts.plate
            zf.writestr(f"{vid}_{plate}.pdf", pdf)
            audit(cur, "export_zip", actor, vid, record, {"via": via, "count": len(violation_ids)})
        if missing:
            zf.writestr(
                "MISSING.txt",
                "证据尚未采集的违法记录 / violations without evidence yet: "
                + ", ".join(map(str, missing))
                + "\n",
            )
    return buffer.getvalue(), missing


def export_json(conn, violation_id: int, actor: str, via: str = "api") -> tuple[Record, dict]:
    """The record and its content as JSON values, audited ('export_json'). Raises NoEvidence."""
    from evidence.content import as_dict

    with transaction(conn) as cur:
        record = current_record(cur, violation_id)
        if record is None:
            raise NoEvidence(f"violation {violation_id} has no evidence yet")
        audit(cur, "export_json", actor, violation_id, record, {"via": via})
    return record, as_dict(record.evidence)
