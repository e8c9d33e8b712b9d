"""The legal basis (处罚依据) of a case, from the city's table by legal-basis key.

Each rule declares the provision it enforces as a key (`Rule.legal_basis_key`,
docs/compliance.md); `[cases.legal_basis]` in the city settings gives the text of the
provision broken and of the one that sets the penalty, per key. A kind whose key the city
has not written falls back to the text its violations recorded (`[rules.<kind>]
legal_basis`), so a case is never prefilled with nothing.
"""

from __future__ import annotations

from typing import Any

from compliance.pipeline import PIPELINE

KEY_OF_KIND = {rule.kind: rule.legal_basis_key for rule in PIPELINE}
LABEL_OF_KIND = {rule.kind: dict(rule.label) for rule in PIPELINE}


def basis_for_kind(settings: Any, kind: str, recorded: str = "") -> str:
    table = settings["cases"]["legal_basis"]
    text = table.get(KEY_OF_KIND.get(kind, ""), "")
    return text or recorded


def case_basis(settings: Any, violations: list[dict]) -> str:
    """One line per distinct provision, in the order of the violations."""
    lines: list[str] = []
    for v in violations:
        text = basis_for_kind(settings, v["kind"], v.get("legal_basis") or "")
        if text and text not in lines:
            lines.append(text)
    return "\n".join(lines)
