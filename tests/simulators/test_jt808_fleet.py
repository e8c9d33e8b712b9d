"""The same simulated fleet over JT/T 808 (simulators.jt808 → the gateway → the broker →
the collector) and over MQTT JSON gives the same violations and the same black-truck list."""

from __future__ import annotations

import pytest

from simulators.accuracy import (
    listed_black_trucks,
    recent_start_ms,
    run_accuracy,
    stored_violations,
)
from simulators.city import generate_city
from simulators.fleet import DEFAULT_RATES, FleetConfig
from tests.conftest import require_mosquitto, truncate_all
from tests.mqtt_helpers import clear_retained, count

# the gateway retains its terminals' status: cleared after the module (conftest)
pytestmark = pytest.mark.usefixtures("no_retained_status_left")


@pytest.fixture(scope="module")
def no_retained_status_left(broker):
    yield
    clear_retained(broker.url)


SCRIPT = {
    0: ["unsealed_transport"],
    1: ["speeding"],
    2: ["route_deviation"],
    3: ["illegal_dumping"],
    4: ["going_dark"],
    5: ["restricted_zone"],
}


def run(settings, db, transport: str):
    city = generate_city(17, trucks=8, center=(114.06, 22.55), expired=1, black=5)
    config = FleetConfig(
        script=SCRIPT, rates={k: 0.1 for k in DEFAULT_RATES}, drop_pct=1, duplicate_pct=1
    )
    start = recent_start_ms(settings.city["timezone"], "06:55", 2400, weekday=True)
    return run_accuracy(
        settings,
        db,
        city,
        config,
        hours=0.67,
        transport=transport,
        database_url=settings.database_url,
        start_ms=start,
    )


def test_jt808_fleet_gives_the_same_violations_as_mqtt_json(settings, broker, db):
    require_mosquitto(broker)
    over_mqtt = run(settings, db, "broker")
    violations, black = stored_violations(db), listed_black_trucks(db)
    assert {v.kind for v in violations} >= {"unsealed_transport", "route_deviation", "going_dark"}
    assert any(b.kind == "black_unregistered_device" for b in black)
    truncate_all(db)
    over_jt808 = run(settings, db, "jt808")
    assert over_jt808.transport == "jt808" and not over_jt808.stopped
    assert stored_violations(db) == violations
    assert listed_black_trucks(db) == black
    assert over_jt808.fixes == over_mqtt.fixes
    # the gateway refused nothing it should have taken: no bad frames, nothing quarantined
    assert count(db, "SELECT count(*) FROM quarantine") == 0
    assert count(db, "SELECT count(*) FROM jt808_terminals") > 0


def test_muck_simulate_speaks_jt808_to_the_real_gateway(settings, broker, db):
    """`muck simulate --protocol jt808` against `muck gateway jt808` and `muck collect`."""
    import os
    import subprocess

    from tests.mqtt_helpers import collector_env, wait_until
    from tests.services import MUCK, muck_collect
    from tests.telemetry.jt808.gateway_helpers import running_gateway

    env = collector_env(settings, broker.url)
    with (
        muck_collect("jt808-sim", env),
        running_gateway(settings, broker.url) as (gateway, port),
    ):
        args = [MUCK, "simulate", "--protocol", "jt808", "--gateway", f"127.0.0.1:{port}"]
        args += ["--trucks", "3", "--duration", "300", "--speedup", "0", "--seed", "5"]
        done = subprocess.run(
            args, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert wait_until(
            lambda: (
                count(
                    db, "SELECT count(DISTINCT device_id) FROM positions WHERE truck_id IS NOT NULL"
                )
                == 3
            ),
            20,
        )
    assert count(db, "SELECT count(*) FROM jt808_terminals") == 3
    assert (
        count(db, "SELECT count(*) FROM positions WHERE lid IS NOT NULL AND load IS NOT NULL") > 50
    )
