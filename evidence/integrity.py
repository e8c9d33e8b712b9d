"""Verifying evidence records: the checksum recomputed over the stored content.

A record is sound when the SHA-256 of its stored text equals its stored checksum, and the
text is canonical (decoding and encoding it again gives the same text: an edit that kept
the JSON valid but changed its form is found too).
"""

from __future__ import annotations

from dataclasses import dataclass

from evidence.content import canonical, decode, sha256
from evidence.store import Record, records


@dataclass
class Finding:
    record_id: int
    violation_id: int
    version: int
    problem: str


def check(record: Record) -> str | None:
    """What is wrong with the record, or None."""
    digest = sha256(record.content)
    if digest != record.sha256:
        return f"checksum mismatch: stored {record.sha256}, content hashes to {digest}"
    try:
        again = canonical(decode(record.content))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the finding
        return f"content does not decode: {exc}"
    if again != record.content:
        return "content is not in canonical form"
    return None


def verify(conn, violation_id: int | None = None) -> tuple[int, list[Finding]]:
    """Check every version of the violation's records (or every record); returns how many
    were checked and what is wrong."""
    checked, findings, after = 0, [], 0
    with conn.cursor() as cur:
        while True:
            batch = records(cur, violation_id, after_id=after, limit=500)
            if not batch:
                break
            for record in batch:
                checked += 1
                problem = check(record)
                if problem:
                    findings.append(
                        Finding(record.id, record.violation_id, record.version, problem)
                    )
            after = batch[-1].id
    conn.rollback()
    return checked, findings
