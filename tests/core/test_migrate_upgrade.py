"""A database migrated before issue 15 moved migrations to the packages owning their tables
upgrades cleanly: the moved steps are not run again, and it ends with exactly the schema of a
database created today."""

from __future__ import annotations

from pathlib import Path

from core.config import load_settings
from core.db import connect
from core.migrate import RENAMED, migrate

BEFORE = Path(__file__).parents[1] / "fixtures" / "schema_before_issue15.dump"


def describe_schema(conn) -> dict[str, list]:
    """Everything a migration can create in the public schema, in a comparable form.

    Columns are compared by name, not position: a column that an old migration added late
    may come earlier in a database created with the new order, which changes nothing.
    """
    queries = {
        "columns": """SELECT table_name, column_name, data_type, is_nullable, column_default
                      FROM information_schema.columns WHERE table_schema = 'public'""",
        "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
                          FROM pg_constraint
                          WHERE connamespace = 'public'::regnamespace""",
        "indexes": """SELECT tablename, indexname, indexdef FROM pg_indexes
                      WHERE schemaname = 'public'""",
        "functions": """SELECT proname, pg_get_function_identity_arguments(oid), prosrc
                        FROM pg_proc WHERE pronamespace = 'public'::regnamespace""",
        "triggers": """SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
                       FROM pg_trigger WHERE NOT tgisinternal""",
        "views": """SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'""",
        "sequences": """SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'""",
        "migrations": "SELECT package, version FROM schema_migrations",
    }
    found = {}
    with conn.cursor() as cur:
        for name, query in queries.items():
            cur.execute(query)
            found[name] = sorted(tuple(str(v) for v in row) for row in cur.fetchall())
    conn.rollback()
    return found


def test_a_database_from_before_the_move_upgrades_to_todays_schema(pg_server):
    settings = load_settings().with_overrides()
    old_url, new_url = pg_server.create_database(), pg_server.create_database()
    try:
        conn = connect(old_url)
        with conn.cursor() as cur:
            cur.execute(BEFORE.read_text(encoding="utf-8"))
        conn.commit()
        conn.close()  # the dump empties search_path for its session

        old = connect(old_url)
        upgraded = set(migrate(old, settings))
        moved = {f"{p}/{v}" for names in RENAMED.values() for p, v in names}
        assert moved and not upgraded & moved, "a moved migration ran a second time"
        assert "compliance/0014_district_fill" in upgraded

        new = connect(new_url)
        assert set(migrate(new, settings)) >= upgraded | moved
        before, after = describe_schema(old), describe_schema(new)
        for part in before:
            assert before[part] == after[part], part
        assert migrate(old, settings) == []  # idempotent: nothing left, nothing renamed twice
        old.close()
        new.close()
    finally:
        pg_server.drop_database(old_url)
        pg_server.drop_database(new_url)


def test_every_migration_number_is_used_once_per_package():
    """Two files with one number apply in name order by accident, and a later merge can
    reorder them; each package numbers its steps 0001, 0002, … once."""
    from collections import Counter

    from core.migrate import discover

    numbers = Counter((m.package, m.version[:4]) for m in discover())
    assert [key for key, n in numbers.items() if n > 1] == []
