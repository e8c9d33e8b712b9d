"""An idle dispatcher sleeps: with nothing pending it waits for a notification or `poll_s`,
instead of going round as fast as the database answers (it once did: an empty outbox read as
"due now", 524 fan-out passes a second and half a core of PostgreSQL on an idle platform).
Counted through the transactions of the test's own database."""

from __future__ import annotations

import time

from alerts.outbox import seconds_to_next_due
from tests.mqtt_helpers import collector_env
from tests.services import MuckProcess


def test_an_empty_outbox_has_nothing_due(db):
    assert seconds_to_next_due(db) is None


def _transactions_of_this_database(db) -> int:
    """Transactions ended in the test's own database (not the cluster's: other databases of
    the server have other users), as the statistics last flushed them (each backend flushes
    at most once a second, so a busy one is at most a second behind)."""
    with db.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            """SELECT xact_commit + xact_rollback FROM pg_stat_database
               WHERE datname = current_database()"""
        )
        (count,) = cur.fetchone()
    db.commit()
    return count


def test_the_running_dispatcher_sleeps_while_nothing_is_pending(settings, db):
    env = collector_env(settings, "mqtt://127.0.0.1:1")
    with MuckProcess(["alerts", "run"], env, ready="dispatching alerts") as process:
        time.sleep(1.5)  # its first passes: the cursor row, the first wait, a stats flush
        before = _transactions_of_this_database(db)
        time.sleep(4.0)
        transactions = _transactions_of_this_database(db) - before
        assert process.proc.poll() is None, process.output()
    # poll_s = 1: a fan-out pass (two or three transactions) a second, and this test's own
    # reads; the busy loop made thousands.
    assert transactions <= 40, transactions
