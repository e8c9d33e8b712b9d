"""What a case says happened (违法事实), prefilled from its violations and their evidence,
and the evidence summary its notices print (track image, times, positions, sensor states).

The evidence is the record in force (evidence/store.py): final once the capture job fixed
it, provisional before that, and the summary says which. A violation without any record
yet (the capture job has not visited it) is described from its own row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from credit.legal import LABEL_OF_KIND
from evidence.content import Evidence
from evidence.store import Record, current_record

STATE_WORDS = {
    "lid": ("车厢盖", {"open": "打开", "closed": "关闭"}),
    "lift": ("举升", {"up": "举升", "down": "落下"}),
    "load": ("载重", {"full": "满载", "half": "半载", "empty": "空载"}),
}


@dataclass
class EvidenceSummary:
    """One violation of a case, as its notices show it."""

    violation_id: int
    kind: str
    label: str
    plate: str
    started: str
    ended: str
    duration_s: float | None
    start_position: str
    end_position: str
    zone: str
    worst: str
    sensors: str
    evidence_state: str  # 已固化 / 临时 / 尚未采集
    sha256: str | None
    version: int | None
    fixes: int
    track_svg: str | None = None
    sensor_svg: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _fmt(value: dt.datetime | None, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _position(lat: float | None, lon: float | None) -> str:
    if lat is None or lon is None:
        return "—"
    return f"北纬 {lat:.6f}，东经 {lon:.6f}（WGS-84）"


def _sensors(evidence: Evidence) -> str:
    """The body-sensor states seen during the episode, e.g. 车厢盖 打开；载重 满载."""
    inside = [f for f in evidence.fixes if f.in_episode] or evidence.fixes
    parts = []
    for name, (label, words) in STATE_WORDS.items():
        seen = []
        for fix in inside:
            value = getattr(fix, name)
            if value is not None and words.get(value, value) not in seen:
                seen.append(words.get(value, value))
        if seen:
            parts.append(f"{label} {'/'.join(seen)}")
    alarms = sorted({a for f in inside for a in f.alarms})
    if alarms:
        parts.append("报警 " + "、".join(alarms))
    return "；".join(parts) or "无传感器数据"


def summarise(cur, settings: Any, violation: dict, *, drawings: bool = False) -> EvidenceSummary:
    """`violation`: a row with id, kind, plate, started_at, ended_at, lat, lon, zone_code,
    worst_value, worst_unit. `drawings` renders the track and sensor SVGs (for notices)."""
    from evidence.render import sensor_svg, track_svg

    tz = str(settings.city["timezone"])
    zone = ZoneInfo(tz)
    record: Record | None = current_record(cur, int(violation["id"]))
    kind = violation["kind"]
    label = LABEL_OF_KIND.get(kind, {}).get("zh", kind)
    worst = (
        f"{violation['worst_value']:.1f} {violation['worst_unit']}".strip()
        if violation.get("worst_value") is not None
        else "—"
    )
    if record is None:
        start, end = violation["started_at"], violation.get("ended_at")
        return EvidenceSummary(
            violation_id=int(violation["id"]),
            kind=kind,
            label=label,
            plate=violation["plate"],
            started=_fmt(start, zone),
            ended=_fmt(end, zone) or "尚未结束",
            duration_s=(end - start).total_seconds() if end else None,
            start_position=_position(violation.get("lat"), violation.get("lon")),
            end_position="—",
            zone=violation.get("zone_code") or "—",
            worst=worst,
            sensors="证据尚未采集",
            evidence_state="尚未采集",
            sha256=None,
            version=None,
            fixes=0,
        )
    evidence = record.evidence
    facts = evidence.facts
    inside = [f for f in evidence.fixes if f.in_episode and f.lat is not None]
    first = inside[0] if inside else None
    last = inside[-1] if inside and facts.ended_at is not None else None
    own = next((z for z in evidence.zones if z.role == "violation"), None)
    zone_text = facts.zone_code or "—"
    if own is not None:
        zone_text = f"{own.code} {own.name}"
    return EvidenceSummary(
        violation_id=int(violation["id"]),
        kind=kind,
        label=evidence.rule.label_zh or label,
        plate=facts.plate,
        started=_fmt(facts.started_at, zone),
        ended=_fmt(facts.ended_at, zone) or "尚未结束",
        duration_s=evidence.measured.duration_s,
        start_position=_position(first.lat, first.lon)
        if first
        else _position(facts.lat, facts.lon),
        end_position=_position(last.lat, last.lon) if last else "—",
        zone=zone_text,
        worst=worst,
        sensors=_sensors(evidence),
        evidence_state="已固化" if evidence.final else "临时（尚未固化）",
        sha256=record.sha256,
        version=record.version,
        fixes=len(evidence.fixes),
        track_svg=track_svg(evidence, settings.city) if drawings else None,
        sensor_svg=sensor_svg(evidence, tz) if drawings else None,
    )


def fact_line(s: EvidenceSummary, company: str | None) -> str:
    """One sentence of 违法事实 for one violation."""
    who = f"{company}的" if company else ""
    duration = f"，持续{s.duration_s:.0f}秒" if s.duration_s is not None else ""
    where = s.start_position if s.zone == "—" else f"{s.zone}（{s.start_position}）"
    worst = f"，测量值{s.worst}" if s.worst != "—" else ""
    proof = f"证据编号 {s.violation_id}"
    if s.sha256:
        proof += f"（第{s.version}版，{s.evidence_state}，SHA-256 {s.sha256[:16]}…）"
    else:
        proof += f"（{s.evidence_state}）"
    return (
        f"{s.started}至{s.ended}，{who}渣土运输车辆{s.plate}在{where}{s.label}"
        f"{worst}{duration}；车辆状态：{s.sensors}。{proof}。"
    )


def prefill_facts(cur, settings: Any, violations: list[dict], company: str | None) -> str:
    tz = str(settings.city["timezone"])
    lines = [fact_line(summarise(cur, settings, v), company) for v in violations]
    header = f"（时间为{tz}当地时间）"
    numbered = [f"{i}. {line}" for i, line in enumerate(lines, 1)] if len(lines) > 1 else lines
    return "\n".join([*numbered, header])
