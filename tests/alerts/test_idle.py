"""An idle dispatcher sleeps: with nothing pending it waits for a notification or `poll_s`,
instead of going round as fast as the database answers (it once did: an empty outbox read as
"due now", 524 fan-out passes a second and half a core of PostgreSQL on an idle platform)."""

from __future__ import annotations

import time

from alerts.outbox import seconds_to_next_due
from tests.mqtt_helpers import collector_env
from tests.services import MuckProcess


def test_an_empty_outbox_has_nothing_due(db):
    assert seconds_to_next_due(db) is None


def _transaction_ids_assigned(db) -> int:
    """The cluster's next transaction id: every fan-out pass locks its cursor row (an id)."""
    with db.cursor() as cur:
        cur.execute("SELECT pg_current_xact_id()::text::bigint")
        (xid,) = cur.fetchone()
    db.commit()
    return xid


def test_the_running_dispatcher_sleeps_while_nothing_is_pending(settings, db):
    env = collector_env(settings, "mqtt://127.0.0.1:1")
    with MuckProcess(["alerts", "run"], env, ready="dispatching alerts") as process:
        time.sleep(1.0)  # its first passes: the cursor row, the first wait
        before = _transaction_ids_assigned(db)
        time.sleep(3.0)
        passes = _transaction_ids_assigned(db) - before - 1  # less this test's own
        assert process.proc.poll() is None, process.output()
    # poll_s = 1: about three passes in 3 s (a few more for the fan-out's own commits).
    assert 1 <= passes <= 20, passes
