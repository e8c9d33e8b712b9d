"""The synthetic city and the live fleet (issue 5), on the real database and broker."""

from __future__ import annotations

import datetime as dt
import json
import math
import time

import msgspec
import pytest
from click.testing import CliRunner

from compliance.violations import KINDS
from core.clicontext import MuckContext
from permits.store import list_permits
from registry.validation import credit_code_valid, plate_problem
from simulators.city import SITE_HALF_M, City, generate_city, install_city
from simulators.cli import simulate
from simulators.fleet import Fleet, FleetConfig, fast_publisher, run_live
from simulators.groundtruth import SCORED_KINDS, truth_document
from tests.mqtt_helpers import count, running_collector, wait_until

TODAY = dt.date(2026, 11, 23)
START_MS = 1_795_000_000_000
SCRIPT = {
    0: ["route_deviation"],
    1: ["unsealed_transport"],
    2: ["speeding"],
    3: ["illegal_dumping"],
    4: ["going_dark"],
    5: ["restricted_zone"],
}


def city_of(seed: int, trucks: int = 12) -> City:
    return generate_city(seed, trucks=trucks, today=TODAY)


def messages(seed: int, seconds: int = 1800) -> list[tuple[str, bytes]]:
    fleet = Fleet(city_of(seed), FleetConfig(script=SCRIPT), start_ms=START_MS)
    return fleet.advance(seconds) + fleet.finish()


def test_same_seed_same_city_and_messages_different_seed_different():
    assert city_of(5) == city_of(5)
    assert city_of(5).geojson() == city_of(5).geojson()
    assert city_of(5).permits_json() == city_of(5).permits_json()
    assert city_of(5) != city_of(6)
    assert messages(5) == messages(5)
    assert messages(5) != messages(6)


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
def test_plates_and_credit_codes_pass_registry_validation(seed):
    city = city_of(seed, trucks=40)
    plates = [t.plate for t in city.trucks]
    assert len(set(plates)) == len(plates)
    assert all(plate_problem(p) is None for p in plates)
    assert all(p.startswith("粤B") and len(p) == 7 for p in plates)
    assert all(credit_code_valid(c.credit_code) for c in city.companies)
    assert all(2 <= len(c.legal_representative) <= 3 for c in city.companies)
    assert {t.permit for t in city.trucks} == {p.number for p in city.permits}


def _on_edge(x, y, a, b) -> bool:
    (ax, ay), (bx, by) = a, b
    cross = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
    return abs(cross) / math.hypot(bx - ax, by - ay) < 1e-6


@pytest.mark.parametrize("seed", [1, 7, 99])
def test_routes_follow_the_roads_between_their_sites(seed):
    city = city_of(seed)
    roads = city.roads
    restricted = city.restricted_nodes()
    for route in city.routes.values():
        nodes = route.nodes
        assert nodes[0] == city.sites[route.origin].node
        assert city.sites[route.origin].kind == "site"
        assert nodes[-1] == city.sites[route.disposal].node
        assert city.sites[route.disposal].kind == "disposal"
        for a, b in zip(nodes, nodes[1:], strict=False):
            roads.edge_between(a, b)  # raises when the two nodes are not joined by a street
        assert not restricted & set(nodes)
        # The exported LineString's vertices are the road nodes.
        feature = next(
            f for f in city.geojson()["features"] if f["properties"]["code"] == route.code
        )
        assert feature["properties"]["width_m"] == 50
        assert len(feature["geometry"]["coordinates"]) == len(nodes)
        # Start and end inside the site polygons.
        x0, y0 = city.node_xy(nodes[0])
        assert city.site_contains(x0, y0) == route.origin
        assert city.site_contains(*city.node_xy(nodes[-1])) == route.disposal
    classes = {e.road_class for e in roads.edges}
    assert classes == {"expressway", "urban_expressway", "other"}


def test_simulated_track_stays_on_roads():
    city = city_of(3)
    fleet = Fleet(city, FleetConfig(noise_m=0, drop_pct=0, duplicate_pct=0), start_ms=START_MS)
    fleet.advance(1200)
    edges = [(city.node_xy(e.a), city.node_xy(e.b)) for e in city.roads.edges]
    agent = fleet.agents[0]
    for _ in range(300):
        state = next(agent.gen)
        assert any(_on_edge(state.x, state.y, a, b) for a, b in edges) or city.site_contains(
            state.x, state.y
        )
        assert state.v * 3.6 <= 100.1


def test_install_city_uses_the_import_paths_and_is_idempotent(db, settings):
    city = generate_city(11, trucks=8, center=(114.06, 22.55))
    first = install_city(db, settings, city)
    assert first["zones"]["inserted"] == len(city.geojson()["features"])
    assert first["permits"]
    second = install_city(db, settings, city)
    assert second["zones"] == {"inserted": 0, "updated": len(city.geojson()["features"])}

    def counts():
        return [
            count(db, "SELECT count(*) FROM companies"),
            count(db, "SELECT count(*) FROM trucks"),
            count(db, "SELECT count(*) FROM terminals"),
            count(db, "SELECT count(*) FROM permits"),
            count(db, "SELECT count(*) FROM geofence_zones"),
            count(db, "SELECT count(*) FROM permit_trucks"),
        ]

    assert counts() == [
        len(city.companies),
        8,
        8,
        len(city.permits),
        len(city.geojson()["features"]),
        8,
    ]
    assert count(db, "SELECT count(*) FROM companies WHERE NOT credit_code_valid") == 0
    permits = list_permits(db)
    assert {p.number for p in permits} == {p.number for p in city.permits}
    assert count(db, "SELECT count(*) FROM geofence_zones WHERE kind = 'restricted'") == 2


def test_ground_truth_of_scripted_misbehaviour():
    fleet = Fleet(city_of(4), FleetConfig(script=SCRIPT, drop_pct=0), start_ms=START_MS)
    fleet.advance(2400)
    doc = truth_document(fleet.truth)
    by_device = {}
    for event in doc["events"]:
        assert event["kind"] in SCORED_KINDS
        assert event["end_ms"] is None or event["end_ms"] >= event["start_ms"]
        by_device.setdefault(event["device_id"], set()).add(event["kind"])
    agents = fleet.agents
    for index, kinds in SCRIPT.items():
        assert set(kinds) <= by_device.get(agents[index].truck.device_id, set()), index
    dark = next(e for e in fleet.truth if e.kind == "going_dark")
    assert dark.end_ms - dark.start_ms >= 420_000
    # Nobody without a script did anything at default rates? Not guaranteed; but every
    # event names a simulated truck (or a black truck's unregistered terminal).
    devices = {a.truck.device_id for a in agents} | {a.truck.rogue_device for a in agents}
    assert {e["device_id"] for e in doc["events"]} <= devices


def test_the_fleet_judges_by_the_thresholds_of_its_settings():
    """The thresholds come from the settings (simulators.thresholds), not from copies: an
    injected speeder (limit + 30 km/h) is no speeding under a 40 km/h tolerance, camera reads
    straddle the configured anpr_min_confidence, the roads carry the configured limits."""
    from simulators.city import city_from_settings
    from simulators.thresholds import shipped_settings

    shipped = shipped_settings()
    changed = shipped.with_overrides(
        rules={"speeding": {**shipped["rules"]["speeding"], "tolerance_kmh": 40.0}},
        compliance={"anpr_min_confidence": 0.9},
        thresholds={"speed_limit_other_kmh": 30},
    )
    config = FleetConfig(script=SCRIPT, drop_pct=0, low_confidence_pct=50)

    def run(settings):
        city = city_from_settings(settings, 4, 12, today=TODAY)
        fleet = Fleet(city, config, start_ms=START_MS, settings=settings)
        msgs = fleet.advance(2400)
        reads = [msgspec.json.decode(p)["confidence"] for t, p in msgs if t.endswith("sightings")]
        kinds = {e.kind for e in fleet.truth}
        return {e.limit_kmh for e in city.roads.edges if e.road_class == "other"}, reads, kinds

    limits, reads, kinds = run(shipped)
    assert limits == {40.0} and "speeding" in kinds
    assert all(c < 0.8 or c >= 0.85 for c in reads)
    limits, reads, kinds = run(changed)
    assert limits == {30.0} and "speeding" not in kinds
    assert all(c < 0.9 or c >= 0.95 for c in reads)
    assert any(0.8 <= c < 0.9 for c in reads) and any(c >= 0.95 for c in reads)


def test_messages_follow_the_contract():
    from telemetry.contract import SightingMessage, StatusMessage, Topics

    msgs = messages(8, 900)
    city = city_of(8)
    sites = set(city.sites)
    plates = {t.plate for t in city.trucks + city.black_trucks}
    decoded = sightings = statuses = 0
    for topic, payload in msgs:
        kind, ident = Topics().parse(topic)
        body = msgspec.json.decode(payload)
        if kind == "sightings":
            sighting = msgspec.json.decode(payload, type=SightingMessage)
            assert sighting.plate in plates and 0 < sighting.confidence < 1
            assert START_MS < sighting.ts <= START_MS + 900_000
            if sighting.site_id is None:  # a road checkpoint
                assert ident.startswith("SIM8-CP-") and sighting.direction == "pass"
            else:
                assert sighting.site_id in sites and ident == sighting.site_id + "-GATE"
                assert sighting.direction in ("in", "out")
            sightings += 1
            continue
        if kind == "status":
            assert msgspec.json.decode(payload, type=StatusMessage).status in ("online", "offline")
            statuses += 1
            continue
        assert kind == "telemetry" and ident.startswith(("SIM8-T", "SIM8-X"))
        for fix in body if isinstance(body, list) else [body]:
            assert set(fix) >= {"ts", "lat", "lon", "speed", "lid", "lift", "load"}
            assert START_MS < fix["ts"] <= START_MS + 900_000
            assert abs(fix["lat"] - 22.55) < 0.05 and abs(fix["lon"] - 114.06) < 0.05
            decoded += 1
    assert decoded > 900 // 10 * 12 * 0.7
    assert sightings > 12 and statuses >= 12  # every reporting terminal comes online


def test_gate_cameras_see_every_truck_leave_and_enter_its_sites():
    city = city_of(9)
    fleet = Fleet(city, FleetConfig(drop_pct=0, duplicate_pct=0), start_ms=START_MS)
    msgs = fleet.advance(3600)
    seen: dict[tuple[str, str], list[str]] = {}
    for topic, payload in msgs:
        if topic.endswith("/sightings"):
            body = msgspec.json.decode(payload)
            if "site_id" in body:
                seen.setdefault((body["plate"], body["site_id"]), []).append(body["direction"])
    # Every truck, black ones included, passed its route's gates; out and in alternate.
    for truck in city.trucks + city.black_trucks:
        permit = next((p for p in city.permits if p.number == truck.permit), None)
        route = city.routes[truck.route or permit.routes[0]]
        directions = seen.get((truck.plate, route.origin), [])
        assert directions[:1] == ["out"], (truck, directions)
        assert all(a != b for a, b in zip(directions, directions[1:], strict=False))


def test_black_trucks_and_their_truth():
    city = city_of(10, trucks=20)
    assert [t.black for t in city.black_trucks] == [
        "rogue_terminal",
        "swapped_terminal",
        "unregistered_plate",
        "no_permit_no_terminal",
        "silent_terminal",
    ]
    assert (
        city_of(10, trucks=20).trucks == generate_city(10, trucks=20, today=TODAY, black=0).trucks
    )
    fleet = Fleet(city, FleetConfig(rates={}), start_ms=START_MS)
    msgs = fleet.advance(3600) + fleet.finish()
    truth = fleet.annotate_truth()
    rogue = {t.rogue_device for t in city.black_trucks if t.rogue_device}
    sent_by = {topic.split("/")[3] for topic, _ in msgs if topic.endswith("/telemetry")}
    assert rogue <= sent_by  # unregistered terminals report
    silent = {t.device_id for t in city.black_trucks if t.device_id}
    assert not silent & sent_by  # the bound terminals of black trucks never do
    black = {(e.kind, e.plate) for e in truth if e.kind.startswith("black_")}
    b = city.black_trucks
    assert {
        ("black_unregistered_plate", b[0].plate),
        ("black_untracked", b[1].plate),
        ("black_unregistered_plate", b[2].plate),
        ("black_no_valid_permit", b[3].plate),
        ("black_untracked", b[4].plate),
    } <= black
    devices = {e.device_id for e in truth if e.kind == "black_unregistered_device"}
    assert devices == rogue
    # No rule truth for black trucks: the rules never see them.
    assert not {e.plate for e in truth if e.kind in KINDS} & {t.plate for t in b}


def test_going_dark_with_alarms_and_the_last_will():
    city = city_of(12)
    config = FleetConfig(script={k: ["going_dark"] for k in range(12)}, alarm_pct=100, drop_pct=0)
    fleet = Fleet(city, config, start_ms=START_MS)
    msgs = fleet.advance(2400)
    alarms = {}
    status: dict[str, list[tuple[str, int]]] = {}
    for topic, payload in msgs:
        body = msgspec.json.decode(payload)
        device = topic.split("/")[3]
        if topic.endswith("/status"):
            status.setdefault(device, []).append((body["status"], body["ts"]))
        elif topic.endswith("/telemetry") and isinstance(body, dict) and "alarms" in body:
            alarms.setdefault(device, set()).update(body["alarms"])
    for agent in fleet.agents[:12]:
        device = agent.truck.device_id
        assert alarms[device] == {agent.terminal.alarm}
        changes = [s for s, _ in status[device]]
        dark_ms = fleet.ms(agent.terminal.dark_from)
        if agent.terminal.alarm == "antenna_cut":  # still connected, only silent
            assert changes == ["online"]
        else:  # the will: offline WILL_DELAY_S after it vanished, online when back
            assert changes == ["online", "offline", "online"]
            assert 45_000 <= status[device][1][1] - dark_ms < 55_000
    kinds = {e.kind for e in fleet.truth}
    assert {"terminal_alarm", "terminal_offline", "going_dark"} <= kinds


def test_trucks_wait_for_their_operating_hours_unless_injected():
    from simulators.accuracy import recent_start_ms

    city = generate_city(31, trucks=20, center=(114.06, 22.55), expired=2, black=0)
    hours = {p.number for p in city.permits if p.operating_hours}
    assert hours  # every third permit bans the rush hours
    start = recent_start_ms("Asia/Shanghai", "06:55", 3600, weekday=True)
    config = FleetConfig(rates={}, script={10: ["restricted_hours"]})
    fleet = Fleet(city, config, start_ms=start)
    msgs = fleet.advance(3600)
    loaded_in_ban: dict[str, int] = {}
    for topic, payload in msgs:
        body = msgspec.json.decode(payload)
        if topic.endswith("/telemetry") and isinstance(body, dict) and body["load"] != "empty":
            if body["speed"] > 5 and body["ts"] >= start + 15 * 60_000:  # 07:10 on
                loaded_in_ban[topic.split("/")[3]] = loaded_in_ban.get(topic.split("/")[3], 0) + 1
    on_hours = {a.truck.device_id for a in fleet.agents if a.truck.permit in hours and a.permitted}
    assert fleet.agents[10].truck.device_id in on_hours
    assert set(loaded_in_ban) & on_hours == {fleet.agents[10].truck.device_id}
    truth = {e.plate for e in fleet.truth if e.kind == "restricted_hours"}
    assert truth == {fleet.agents[10].truck.plate}


def test_short_live_run_through_broker_and_collector(db, settings, tmp_path):
    city = generate_city(21, trucks=6, center=(114.06, 22.55))
    install_city(db, settings, city)
    duration = 1500
    start_ms = int(time.time() * 1000) - duration * 1000 - 60_000
    fleet = Fleet(city, FleetConfig(script=SCRIPT, coverage_gap_pct=100), start_ms=start_ms)
    with running_collector(settings):
        publisher, publish = fast_publisher(settings)
        try:
            run_live(fleet, publish, speedup=0, duration_s=duration)
        finally:
            publisher.close()
        expected = fleet.published
        assert wait_until(
            lambda: count(db, "SELECT count(DISTINCT truck_id) FROM positions") == 6, 30
        )
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") >= expected * 0.9, 30)
    assert fleet.reuploads >= 1
    assert count(db, "SELECT count(*) FROM positions WHERE truck_id IS NULL") == 0
    assert count(db, "SELECT count(*) FROM quarantine") == 0
    kinds = {e.kind for e in fleet.truth}
    assert kinds >= {k for ks in SCRIPT.values() for k in ks}


def test_cli_simulate_writes_ground_truth(db, settings, tmp_path):
    truth = tmp_path / "truth.json"
    with running_collector(settings):
        result = CliRunner().invoke(
            simulate,
            [
                "--trucks",
                "3",
                "--seed",
                "5",
                "--speedup",
                "0",
                "--duration",
                "600",
                "--rate",
                "speeding=1",
                "--truth",
                str(truth),
            ],
            obj=MuckContext(None),
        )
        assert result.exit_code == 0, result.output
        assert wait_until(
            lambda: count(db, "SELECT count(DISTINCT truck_id) FROM positions") == 3, 30
        )
    doc = json.loads(truth.read_text(encoding="utf-8"))
    assert doc["meta"]["seed"] == 5
    assert all(e["kind"] in KINDS for e in doc["events"])
    assert "installed" in result.output and "simulation stopped" in result.output


def test_site_half_size_leaves_room_between_nodes():
    assert SITE_HALF_M * 2 < 600


def test_run_live_paces_simulated_time_and_never_passes_now():
    city = generate_city(31, trucks=3, center=(114.06, 22.55))
    fleet = Fleet(city, FleetConfig(), start_ms=int(time.time() * 1000) - 400_000)
    sent: list[tuple[str, bytes]] = []
    began = time.monotonic()
    run_live(fleet, sent.extend, speedup=300, duration_s=300, tick_s=0.05)
    elapsed = time.monotonic() - began
    assert fleet.t == 300
    assert 0.8 < elapsed < 5  # 300 simulated seconds at 300x
    assert fleet.published == len(sent) > 0
    newest = max(msgspec.json.decode(p)["ts"] for _, p in sent if p[:1] == b"{")
    assert newest <= time.time() * 1000


def test_a_real_last_will_reaches_device_status(db, settings):
    """What the simulator's `offline` stands for: a terminal's will, published by the broker
    when the terminal's connection dies without DISCONNECT, stored by the collector."""
    import uuid

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from telemetry.contract import Topics

    endpoint = settings.mqtt_endpoint()
    device = "SIMWILL-" + uuid.uuid4().hex[:6]
    topic = Topics(settings.mqtt["topic_prefix"]).status(device)
    with running_collector(settings):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device)
        client.will_set(topic, b"offline", qos=1, retain=False)
        client.connect(endpoint.host, endpoint.port, keepalive=5)
        client.loop_start()
        client.publish(topic, b"online", qos=1).wait_for_publish(10)
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM device_status WHERE status = 'online'") == 1
        )
        client.loop_stop()
        client.socket().close()  # the terminal loses power: no DISCONNECT
        assert wait_until(
            lambda: (
                count(
                    db,
                    "SELECT count(*) FROM device_status WHERE device_id = %s AND status = 'offline'",
                    (device,),
                )
                == 1
            ),
            15,
        )
