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
PACKAGES = ("registry", "telemetry", "geofence", "permits", "compliance", "black_trucks", "web")

# Migrations that moved to the package owning their tables (issue 15), old name → new name.
# A database migrated before the move has the old names in schema_migrations; they are
# renamed before anything is applied, so the moved steps are not run a second time.
RENAMED: dict[tuple[str, str], tuple[str, str]] = {
    ("compliance", "0001_permits"): ("permits", "0001_permits"),
    ("compliance", "0003_black_trucks"): ("black_trucks", "0001_black_trucks"),
    # An index on positions for the black-truck device scan: it belongs to positions' owner.
    ("compliance", "0007_unregistered_scan"): ("telemetry", "0006_unregistered_scan"),
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
    """Record moved migrations under their new package and version (idempotent)."""
    if not RENAMED:
        return
    with transaction(conn) as cur:
        for (old_package, old_version), (package, version) in RENAMED.items():
            cur.execute(
                """UPDATE schema_migrations SET package = %s, version = %s
                   WHERE package = %s AND version = %s""",
                (package, version, old_package, old_version),
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
