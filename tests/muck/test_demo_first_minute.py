"""`muck demo` as a new user starts it: within the first minute the scripted trucks show up as
violations of each kind, and a black truck seen by a camera is on the list; the banner gives
the dashboard's address and log-in, and the dashboard answers there.

The real `muck demo` runs as a subprocess on the test's database and broker (MUCK_DATABASE_URL
and MUCK_MQTT_URL set, so it starts no embedded service), on free ports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.mqtt_helpers import clear_retained
from tests.services import free_port

MUCK = str(Path(sys.executable).with_name("muck"))
FIRST_MINUTE = ("unsealed_transport", "speeding", "route_deviation", "illegal_dumping")


def _kinds(conn) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT kind FROM violations WHERE status <> 'withdrawn'")
        kinds = {row[0] for row in cur.fetchall()}
    conn.commit()
    return kinds


def _black_plates(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM black_trucks WHERE kind = 'plate'")
        n = cur.fetchone()[0]
    conn.commit()
    return n


def _one(conn, query: str) -> int:
    with conn.cursor() as cur:
        cur.execute(query)
        n = cur.fetchone()[0]
    conn.commit()
    return n


def test_demo_shows_violations_within_the_first_minute(settings, broker, db, tmp_path):
    web_port = free_port()
    env = {
        **os.environ,
        "MUCK_DATABASE_URL": settings.database_url,
        "MUCK_MQTT_URL": broker.url,
    }
    proc = subprocess.Popen(
        [
            *(MUCK, "demo", "--trucks", "20", "--web-port", str(web_port)),
            *("--data-dir", str(tmp_path), "--jt808-port", str(free_port())),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
    began = time.monotonic()
    try:
        seen: dict[str, float] = {}
        black_at = None
        while time.monotonic() - began < 90 and (len(seen) < len(FIRST_MINUTE) or not black_at):
            assert proc.poll() is None, "muck demo exited:\n" + "".join(log)
            for kind in _kinds(db) - set(seen):
                seen[kind] = time.monotonic() - began
            if black_at is None and _black_plates(db):
                black_at = time.monotonic() - began
            time.sleep(1)
        out = "".join(log)
        missing = set(FIRST_MINUTE) - set(seen)
        assert not missing, f"no {sorted(missing)} after 90 s (seen {seen}):\n{out}"
        late = {k: round(s) for k, s in seen.items() if k in FIRST_MINUTE and s > 60}
        assert not late, f"later than the first minute: {late}\n{out}"
        assert black_at is not None, f"no black truck seen by a camera after 90 s:\n{out}"
        banner = re.search(
            r"dashboard: (http://127\.0\.0\.1:\d+/)\s+\(user admin, password (\S+)\)", out
        )
        assert banner and banner.group(1) == f"http://127.0.0.1:{web_port}/", out
        with urllib.request.urlopen(banner.group(1) + "health", timeout=10) as resp:
            assert resp.status == 200
        for kind in (*FIRST_MINUTE, "black_seen"):
            assert re.search(rf"first minute: \S+ {kind}", out), out
        # An alert in the admin's live feed, and final evidence packs within two minutes.
        feed = "SELECT count(*) FROM alert_outbox WHERE channel = 'feed'"
        final = "SELECT count(*) FROM evidence_records WHERE final"
        while time.monotonic() - began < 120 and not (_one(db, feed) and _one(db, final)):
            time.sleep(1)
        assert _one(db, feed) > 0, f"no alert in the live feed after 120 s:\n{out}"
        assert _one(db, final) > 0, f"no final evidence after 120 s:\n{out}"
        packed = time.monotonic() - began
        # Part of the fleet speaks JT/T 808 through the demo's gateway, stored like the rest.
        assert re.search(r"JT/T 808 gateway on port \d+: [1-9]\d* of the fleet", out), out
        through_gateway = """SELECT count(*) FROM positions p
                             JOIN jt808_terminals j ON j.device_id = p.device_id
                             WHERE p.truck_id IS NOT NULL"""
        assert _one(db, through_gateway) > 0, out
        # Credit: the demo confirms a sample and decides cases for it (marked demo data); a
        # company's score drops on the credit overview.
        demo_cases = "SELECT count(*) FROM credit_cases WHERE demo AND status = 'decided'"
        while time.monotonic() - began < 150 and not _one(db, demo_cases):
            time.sleep(1)
        assert _one(db, demo_cases) > 0, f"no demo case after 150 s:\n{out}"
        print(f"first violations after (s): {seen}; black truck after {black_at:.0f} s;")
        print(f"an alert in the feed and final evidence after {packed:.0f} s")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        clear_retained(broker.url)  # its gateway's retained statuses, for later collectors
