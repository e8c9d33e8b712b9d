"""The running product captures evidence: the real `muck collect` (a subprocess) against the
test's broker and database, a speeding track published over MQTT, and the final evidence
rows appear — no function of the evidence package is called by the test."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from pathlib import Path

from tests.compliance.city import build_city
from tests.evidence.test_evidence import backdate_catalogue, speeding_trace
from tests.mqtt_helpers import collector_env, count, publish, wait_until
from tests.services import muck_collect

MUCK = str(Path(sys.executable).with_name("muck"))


def test_muck_collect_captures_final_evidence(settings, broker, db):
    city = build_city(db, settings)
    backdate_catalogue(db, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    trace = speeding_trace(city)
    # Captures quickly, and finalises an episode a few seconds after it ended.
    env = collector_env(
        settings, broker.url, "[evidence]\nevery_s = 1\nfinal_delay_s = 5\nrefresh_s = 2\n"
    )
    messages = [(m.topic, m.payload) for m in trace.messages()]
    fast = next(i for i, f in enumerate(trace.fixes) if f["speed"] > 50)
    collector = muck_collect("ev-" + uuid.uuid4().hex[:6], env)
    try:
        # the episode is open: provisional evidence, captured again as it grows
        publish(broker.url, messages[: fast + 12])
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM evidence_records WHERE NOT final") == 1,
            timeout=60,
            step=0.5,
        ), "no provisional evidence:\n" + collector.output()
        publish(broker.url, messages[fast + 12 :])
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM evidence_records WHERE final") == 1,
            timeout=90,
            step=0.5,
        ), "no final evidence:\n" + collector.output()
    finally:
        collector.stop()
    with db.cursor() as cur:
        cur.execute(
            """SELECT v.kind, r.fixes, r.sha256, r.content LIKE '%%"plate":"粤B10001"%%'
               FROM evidence_records r JOIN violations v ON v.id = r.violation_id"""
        )
        kind, fixes, digest, has_plate = cur.fetchone()
        cur.execute("SELECT actor, action FROM evidence_audit ORDER BY id")
        actions = cur.fetchall()
    db.rollback()
    assert kind == "speeding" and fixes > 10 and len(digest) == 64 and has_plate
    assert actions[0] == ("system", "capture") and actions[-1] == ("system", "finalise")
    # and the record it left verifies
    verify = subprocess.run(
        [MUCK, "evidence", "verify", "--all"], env=env, capture_output=True, text=True
    )
    assert verify.returncode == 0 and "0 mismatch(es)" in verify.stdout
