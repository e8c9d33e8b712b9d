"""Versioned migrations, owned by the package whose tables they create.

Each package keeps its migrations in `<package>/sql/NNNN_name.sql` (plain SQL) or
`NNNN_name.py` (a module with `apply(cur, settings)` for steps that depend on the server,
such as TimescaleDB detection). `muck migrate` applies the ones not yet recorded in
`schema_migrations`, package by package in data-path order, each in its own transaction,
under an advisory lock so that two processes never migrate at once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from core.db import transaction

# Data-path order: a package may reference tables of the packages before it, never after.
PACKAGES = (
    "registry",
    "telemetry",
    "geofence",
    "permits",
    "compliance",
    "black_trucks",
    "evidence",
    "alerts",
    "credit",
    "web",
)

# Migrations that moved to the package owning their tables (issue 15): old name → the new
# names it became (one, several when it was split, none when it was folded into another). A
# database migrated before the move has the old names in schema_migrations; they are
# renamed before anything is applied, so the moved steps are not run a second time.
RENAMED: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("compliance", "0001_permits"): (("permits", "0001_permits"),),
    ("compliance", "0003_black_trucks"): (("black_trucks", "0001_black_trucks"),),
    # An index on positions for the black-truck device scan: it belongs to positions' owner.
    ("compliance", "0007_unregistered_scan"): (("telemetry", "0006_unregistered_scan"),),
    ("web", "0002_violations_live"): (("compliance", "0009_violations_updated_index"),),
    ("web", "0003_violation_districts"): (("compliance", "0010_violation_districts"),),
    ("web", "0004_live_trucks_updated"): (("registry", "0002_trucks_updated_index"),),
    # It dropped an index of truck_state that web/0001 had created; neither is made any more.
    ("web", "0005_truck_state_hot"): (),
    ("web", "0005_violation_list_indexes"): (
        ("compliance", "0011_violation_list_indexes"),
        ("registry", "0003_companies_name_index"),
    ),
    ("web", "0006_violation_count_indexes"): (("compliance", "0012_violation_count_indexes"),),
    ("web", "0007_violation_zone_index"): (("compliance", "0013_violation_zone_index"),),
}
ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.(sql|py)$")
_LOCK_KEY = 0x6D75636B  # "muck"


@dataclass(frozen=True)
class Migration:
    package: str
    version: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover() -> list[Migration]:
    found: list[Migration] = []
    for package in PACKAGES:
        folder = ROOT / package / "sql"
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if _NAME.match(path.name):
                found.append(Migration(package, path.stem, path))
    return found


def _apply_python(path: Path, cur, settings: Settings) -> None:
    spec = importlib.util.spec_from_file_location(f"_migration_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    module.apply(cur, settings)


def _rename_moved(conn) -> None:
    """Record moved migrations under their new names (idempotent: old names go once)."""
    checksums = {(m.package, m.version): m.checksum for m in discover()}
    with transaction(conn) as cur:
        for (old_package, old_version), new_names in RENAMED.items():
            cur.execute(
                """DELETE FROM schema_migrations WHERE package = %s AND version = %s
                   RETURNING applied_at""",
                (old_package, old_version),
            )
            row = cur.fetchone()
            if row is None:
                continue
            for package, version in new_names:
                cur.execute(
                    """INSERT INTO schema_migrations (package, version, checksum, applied_at)
                       VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                    (package, version, checksums[(package, version)], row[0]),
                )


def migrate(conn, settings: Settings) -> list[str]:
    """Apply pending migrations; returns the ones applied (empty when up to date)."""
    with transaction(conn) as cur:
        cur.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   package text NOT NULL,
                   version text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (package, version))"""
        )
    applied: list[str] = []
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    conn.commit()
    try:
        _rename_moved(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT package, version FROM schema_migrations")
            done = {(p, v) for p, v in cur.fetchall()}
        conn.commit()
        for migration in discover():
            if (migration.package, migration.version) in done:
                continue
            with transaction(conn) as cur:
                if migration.path.suffix == ".sql":
                    cur.execute(migration.path.read_text(encoding="utf-8"))
                else:
                    _apply_python(migration.path, cur, settings)
                cur.execute(
                    "INSERT INTO schema_migrations (package, version, checksum) VALUES (%s, %s, %s)",
                    (migration.package, migration.version, migration.checksum),
                )
            applied.append(f"{migration.package}/{migration.version}")
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        conn.commit()
    return applied
