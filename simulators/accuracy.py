"""`muck accuracy`: the compliance rules scored against the simulator's ground truth.

A seeded city is installed, its fleet runs for some simulated hours, and every simulated
minute's messages go either through the real MQTT broker into the real collector
(telemetry.collector.Collector with ComplianceEngine.after_store, in this process, on a
topic prefix of its own) or, with transport "inprocess", straight into the collector's
ingestion path (telemetry.ingest.Ingestor → BatchWriter with the same hook). Once a minute is
stored, the clock jobs run at the simulated time (going-dark sweep, black-truck matching).
The violations stored, the terminals' status and the black-truck list are then matched to
the injected misbehaviour per kind. See docs/accuracy.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse, urlunparse
from zoneinfo import ZoneInfo

from simulators.groundtruth import BLACK_KINDS, SCORED_KINDS, TruthEvent

log = logging.getLogger(__name__)

CHUNK_S = 60  # simulated seconds per feeding step (and between going-dark sweeps)
DEVICE_SCAN_S = 900  # simulated seconds between scans for unregistered terminals
TRANSPORTS = ("broker", "inprocess", "jt808")
BROKER_WAIT_S = 120.0  # longest wait for the collector to store one simulated minute
# The black-truck list is scored per plate (or device), whatever the times: a match needs
# the same plate and reason only.
_ANY_TIME_S = 10 * 365 * 86400.0


@dataclass(frozen=True)
class Found:
    """A stored violation, as the matcher sees it."""

    plate: str  # the device id for black_unregistered_device
    kind: str  # one of simulators.groundtruth.SCORED_KINDS
    start_ms: int
    end_ms: int | None  # None while still going on


@dataclass
class KindScore:
    kind: str
    truth: int = 0  # truth events that count for recall (not while dark)
    dark: int = 0  # truth events while the terminal was dark: excluded from recall
    short: int = 0  # truth events shorter than the rule's minimum: excluded from recall
    found: int = 0  # violations the rules stored
    tp: int = 0  # truth events (not while dark) matched by a violation
    dark_matched: int = 0  # violations matched to a while-dark truth event (not false)
    short_matched: int = 0  # violations matched to a short truth event (not false)
    fp: int = 0  # violations matching no truth event
    fn: int = 0  # truth events (not while dark) no violation matched
    fp_after_dark: int = 0  # false positives starting where the truck's going dark ended
    errors_s: list[float] = field(default_factory=list)  # detected start - true start
    missed: list[TruthEvent] = field(default_factory=list, repr=False)  # the false negatives
    extra: list[Found] = field(default_factory=list, repr=False)  # the false positives

    @property
    def precision(self) -> float | None:
        return (self.found - self.fp) / self.found if self.found else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def recall_all(self) -> float | None:
        """Recall counting the short episodes too (still not those while dark)."""
        n = self.truth + self.short
        return (self.tp + self.short_matched) / n if n else None

    def error_quantile(self, q: float) -> float | None:
        if not self.errors_s:
            return None
        values = sorted(abs(e) for e in self.errors_s)
        if q == 0.5:
            return statistics.median(values)
        k = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
        return values[k]


def minimum_s(settings, kind: str) -> float:
    """The rule's minimum duration (going dark: the silence before a truck counts as dark;
    alarms, status and the black-truck list: none)."""
    if kind == "going_dark":
        return float(settings.thresholds["dark_after_s"])
    return float(settings.sections["rules"].get(kind, {}).get("min_duration_s", 0.0))


def tolerances_s(settings, interval_s: int) -> dict[str, float]:
    """Per kind: the rule's minimum duration + two reporting intervals (black trucks: any
    time, they are scored per plate)."""
    out = {kind: minimum_s(settings, kind) + 2 * interval_s for kind in SCORED_KINDS}
    out.update({kind: _ANY_TIME_S for kind in BLACK_KINDS})
    return out


def shortest_s(settings, interval_s: int) -> dict[str, float]:
    """Per kind: truth episodes shorter than this (the rule's minimum + one reporting
    interval, which sampling can cut off a run) are not expected to be reported. Alarms,
    status changes and black trucks are events: never too short."""
    out = {kind: minimum_s(settings, kind) + interval_s for kind in SCORED_KINDS}
    out.update({kind: 0.0 for kind in ("terminal_alarm", "terminal_offline", *BLACK_KINDS)})
    return out


def _key(t: TruthEvent) -> tuple[str, str]:
    """What a truth event is matched on: plate and kind (an unregistered device: its id)."""
    return (t.device_id if t.kind == "black_unregistered_device" else t.plate, t.kind)


def merge_truth(truth: list[TruthEvent], gap_s: float) -> list[TruthEvent]:
    """Join episodes of one truck and kind separated by less than `gap_s` (a gap the fixes
    can hardly see, e.g. a deviating truck passing within 35 m of its route for a few
    seconds). The joined episode is while dark only if all its parts were."""
    out: list[TruthEvent] = []
    last: dict[tuple[str, str], TruthEvent] = {}
    for t in sorted(truth, key=lambda e: (e.start_ms, e.device_id, e.kind)):
        key = _key(t)
        prev = last.get(key)
        if prev is not None and prev.end_ms is not None and t.start_ms - prev.end_ms < gap_s * 1000:
            prev.end_ms = t.end_ms
            prev.detail["parts"] = prev.detail.get("parts", 1) + 1
            if not t.detail.get("while_dark"):
                prev.detail.pop("while_dark", None)
            continue
        joined = TruthEvent(t.plate, t.device_id, t.kind, t.start_ms, t.end_ms, dict(t.detail))
        out.append(joined)
        last[key] = joined
    return out


def _class(t: TruthEvent, shortest_s: dict[str, float] | None, end_ms: int) -> int:
    """0: counts for recall; 1: shorter than the rule's minimum; 2: while dark (or never
    delivered: an alarm whose fixes were all lost)."""
    if t.detail.get("while_dark") or t.detail.get("unseen"):
        return 2
    if shortest_s:
        end = t.end_ms if t.end_ms is not None else end_ms  # open: so far
        if end - t.start_ms < shortest_s.get(t.kind, 0.0) * 1000:
            return 1
    return 0


def match(
    truth: list[TruthEvent],
    found: list[Found],
    tolerance_s: dict[str, float],
    end_ms: int,
    shortest_s: dict[str, float] | None = None,
) -> dict[str, KindScore]:
    """One-to-one matching per kind: same plate and kind, intervals overlapping within the
    kind's tolerance; pairs are taken truth that counts for recall first, then short truth
    (below `shortest_s`; an open episode counts up to `end_ms`), then truth while dark, each nearest start
    first. Open intervals (end None) run to `end_ms`."""
    scores = {kind: KindScore(kind) for kind in SCORED_KINDS}
    for v in found:
        scores[v.kind].found += 1
    classes = [_class(t, shortest_s, end_ms) for t in truth]
    for t, c in zip(truth, classes, strict=True):
        if c == 2:
            scores[t.kind].dark += 1
        elif c == 1:
            scores[t.kind].short += 1
        else:
            scores[t.kind].truth += 1
    pairs = []
    by_key: dict[tuple[str, str], list[int]] = {}
    for j, v in enumerate(found):
        by_key.setdefault((v.plate, v.kind), []).append(j)
    for i, t in enumerate(truth):
        tol = tolerance_s.get(t.kind, 0.0) * 1000
        t_end = t.end_ms if t.end_ms is not None else end_ms
        for j in by_key.get(_key(t), ()):
            v = found[j]
            v_end = v.end_ms if v.end_ms is not None else end_ms
            if v.start_ms <= t_end + tol and v_end >= t.start_ms - tol:
                pairs.append((classes[i], abs(v.start_ms - t.start_ms), i, j))
    pairs.sort()
    slack_ms = min(tolerance_s.values(), default=0.0) * 1000 / 2
    dark_ends: dict[str, list[int]] = {}
    for t in truth:
        if t.kind == "going_dark" and t.end_ms is not None:
            dark_ends.setdefault(t.plate, []).append(t.end_ms)
    used_t: set[int] = set()
    used_v: set[int] = set()
    for cls, _diff, i, j in pairs:
        if i in used_t or j in used_v:
            continue
        used_t.add(i)
        used_v.add(j)
        score = scores[truth[i].kind]
        if cls == 2:
            score.dark_matched += 1
        elif cls == 1:
            score.short_matched += 1
        else:
            score.tp += 1
            score.errors_s.append((found[j].start_ms - truth[i].start_ms) / 1000)
    for j, v in enumerate(found):
        if j not in used_v:
            scores[v.kind].fp += 1
            scores[v.kind].extra.append(v)
            if any(abs(v.start_ms - e) <= 2 * slack_ms for e in dark_ends.get(v.plate, ())):
                scores[v.kind].fp_after_dark += 1
    for i, t in enumerate(truth):
        if i not in used_t and classes[i] == 0:
            scores[t.kind].missed.append(t)
    for score in scores.values():
        score.fn = score.truth - score.tp
    return scores


def stored_violations(conn) -> list[Found]:
    """Violations in the database (withdrawn ones left out: a replay took them back).
    Going-dark violations of stream `terminal_alarm` are scored as `terminal_alarm`."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT t.plate,
                      CASE WHEN v.kind = 'going_dark' AND v.stream = 'terminal_alarm'
                           THEN 'terminal_alarm' ELSE v.kind END,
                      (extract(epoch FROM v.started_at) * 1000)::bigint,
                      (extract(epoch FROM v.ended_at) * 1000)::bigint
               FROM violations v JOIN trucks t ON t.id = v.truck_id
               WHERE v.status <> 'withdrawn' ORDER BY 1, 2, 3"""
        )
        rows = cur.fetchall()
    conn.commit()
    return [Found(p, k, int(s), int(e) if e is not None else None) for p, k, s, e in rows]


def listed_black_trucks(conn) -> list[Found]:
    """The black-truck list: one per plate and reason, one per unregistered device."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT kind, key, reasons, (extract(epoch FROM first_seen) * 1000)::bigint,
                      (extract(epoch FROM last_seen) * 1000)::bigint
               FROM black_trucks ORDER BY kind, key"""
        )
        rows = cur.fetchall()
    conn.commit()
    out = []
    for kind, key, reasons, first, last in rows:
        if kind == "device":
            out.append(Found(key, "black_unregistered_device", int(first), int(last)))
        else:
            out += [Found(key, "black_" + r, int(first), int(last)) for r in reasons]
    return out


class StatusWatch:
    """The platform's view of terminal status (`device_status`, one row per device), read
    after every simulated minute: offline periods as the platform saw them."""

    def __init__(self, plates: dict[str, str]) -> None:
        self.plates = plates  # device -> plate
        self.seen: dict[str, tuple[str, dt.datetime]] = {}
        self.found: list[Found] = []
        self.open: dict[str, int] = {}  # device -> index of its open offline period

    def poll(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT device_id, status, changed_at FROM device_status")
            rows = cur.fetchall()
        conn.commit()
        for device, status, changed_at in rows:
            if device not in self.plates or self.seen.get(device) == (status, changed_at):
                continue
            self.seen[device] = (status, changed_at)
            ms = int(changed_at.timestamp() * 1000)
            if status == "offline" and device not in self.open:
                self.open[device] = len(self.found)
                self.found.append(Found(self.plates[device], "terminal_offline", ms, None))
            elif status == "online" and device in self.open:
                i = self.open.pop(device)
                self.found[i] = dataclasses.replace(self.found[i], end_ms=ms)


def recent_start_ms(
    tz: str, hhmm: str, duration_s: float, *, weekday: bool = False, now_s: float | None = None
) -> int:
    """The most recent local time `hhmm` (on a weekday, if asked) from which a run of
    `duration_s` ends at least two minutes before now (fix times must lie in the past)."""
    zone = ZoneInfo(tz)
    hours, minutes = (int(x) for x in hhmm.split(":"))
    latest = (time.time() if now_s is None else now_s) - duration_s - 120
    day = dt.datetime.fromtimestamp(latest, zone).date()
    for _ in range(10):
        start = dt.datetime.combine(day, dt.time(hours, minutes), zone)
        if start.timestamp() <= latest and (not weekday or start.isoweekday() <= 5):
            return int(start.timestamp() * 1000)
        day -= dt.timedelta(days=1)
    raise ValueError(f"no {hhmm} start found")  # unreachable: a weekday within 10 days


def broker_reachable(settings, timeout_s: float = 1.0) -> bool:
    """Whether MUCK_MQTT_URL accepts a TCP connection (the broker transport's default)."""
    if not settings.mqtt_url:
        return False
    try:
        endpoint = settings.mqtt_endpoint()
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


@dataclass
class AccuracyResult:
    seed: int
    trucks: int
    hours: float  # asked for
    simulated_s: int  # actually run (less when stopped)
    fixes: int  # messages fed to the ingestion path
    wall_s: float
    scores: dict[str, KindScore]
    stopped: bool = False
    transport: str = "inprocess"
    start_ms: int = 0
    black: int = 0  # black trucks among `trucks`

    def failures(self, min_precision: float, min_recall: float) -> list[str]:
        """Kinds with truth events below a floor."""
        out = []
        for s in self.scores.values():
            if s.truth == 0:
                continue
            if s.precision is not None and s.precision < min_precision:
                out.append(f"{s.kind}: precision {s.precision:.3f} < {min_precision}")
            if s.recall is not None and s.recall < min_recall:
                out.append(f"{s.kind}: recall {s.recall:.3f} < {min_recall}")
        return out

    def rows(self) -> list[list[str]]:
        def f(x: float | None, fmt: str) -> str:
            return "–" if x is None else format(x, fmt)

        out = []
        for kind in SCORED_KINDS:
            s = self.scores[kind]
            if not (s.truth or s.dark or s.short or s.found):
                continue
            out.append(
                [
                    kind,
                    str(s.truth),
                    str(s.short),
                    str(s.dark),
                    str(s.found),
                    str(s.tp),
                    str(s.fp),
                    str(s.fn),
                    f(s.precision, ".3f"),
                    f(s.recall, ".3f"),
                    f(s.recall_all, ".3f"),
                    f(s.error_quantile(0.5), ".0f"),
                    f(s.error_quantile(0.95), ".0f"),
                ]
            )
        return out

    HEADER = ["kind", "truth", "short", "dark", "found", "TP", "FP", "FN", "precision",
              "recall", "recall+short", "err p50 s", "err p95 s"]  # fmt: skip

    def summary(self) -> str:
        state = " (stopped early)" if self.stopped else ""
        start = dt.datetime.fromtimestamp(self.start_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
        return (
            f"seed {self.seed}, {self.trucks} trucks ({self.black} black), "
            f"{self.simulated_s / 3600:.2f} of "
            f"{self.hours:g} simulated hours from {start} UTC{state}; {self.fixes} messages "
            f"({self.transport}) in {self.wall_s:.0f} s"
        )

    def table(self) -> str:
        rows = [self.HEADER, *self.rows()]
        widths = [max(len(r[c]) for r in rows) for c in range(len(self.HEADER))]
        lines = []
        for r in rows:
            cells = [r[0].ljust(widths[0])] + [
                v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells))
        return "\n".join([self.summary(), *lines, *self.notes()])

    def notes(self) -> list[str]:
        return [
            f"{s.kind}: {s.fp_after_dark} of {s.fp} false positives start where the truck's "
            "going dark ended"
            for s in self.scores.values()
            if s.fp_after_dark
        ]

    def markdown(self) -> str:
        lines = [
            "# Rule accuracy against the simulator's ground truth",
            "",
            self.summary() + ".",
            "",
            "| " + " | ".join(self.HEADER) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(self.HEADER) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows()]
        lines += [
            "",
            "truth: injected episodes that count for recall; short: shorter than the rule's minimum "
            "duration + one reporting interval; dark: injected while the terminal was dark (both "
            "excluded from recall, and a violation matching them is not false); "
            "precision = (found − FP) / found; recall = TP / (TP + FN); recall+short also counts "
            "the short episodes; err: |detected start − true start| of matched episodes.",
            "",
        ]
        lines += [f"* {note}" for note in self.notes()]
        if self.notes():
            lines.append("")
        return "\n".join(lines)


class _InProcess:
    """The collector's ingestion path without MQTT: Ingestor.build → BatchWriter.write."""

    def __init__(self, settings, conn, engine) -> None:
        from telemetry.ingest import Ingestor

        self.conn = conn
        self.ingestor = Ingestor(settings)
        self.writer = self.ingestor.make_writer(conn, after_store=[engine.after_store])
        self.batch_size = int(settings.ingest["batch_size"])

    def feed(self, messages: list[tuple[str, bytes]]) -> None:
        from telemetry.ingest import Incoming

        incoming = [Incoming(t, p) for t, p in messages]
        for i in range(0, len(incoming), self.batch_size):
            with self.conn.cursor() as cur:
                batch = self.ingestor.build(incoming[i : i + self.batch_size], cur)
            self.writer.write(batch)

    def close(self) -> None:
        pass


class _ThroughBroker:
    """Publish to the broker (QoS 1) and let the real collector, running in this process on
    a topic prefix of its own, store the messages; `feed` returns once the collector has
    committed (stored or quarantined) every message published so far."""

    def __init__(self, settings, database_url: str, engine, prefix: str) -> None:
        from simulators.fastpub import FastPublisher, plain_endpoint
        from telemetry.collector import Collector

        self.settings = settings.with_overrides(mqtt={"topic_prefix": prefix})
        self.settings = dataclasses.replace(self.settings, database_url=database_url)
        endpoint = plain_endpoint(self.settings.mqtt_endpoint())
        self.endpoint = endpoint
        self.client_id = "muck-accuracy-" + uuid.uuid4().hex[:8]
        self.collector = Collector(
            self.settings, client_id=self.client_id, after_store=[engine.after_store]
        )
        self.publisher = FastPublisher(
            endpoint.host,
            endpoint.port,
            client_id=self.client_id + "-pub",
            username=endpoint.username,
            password=endpoint.password,
        )
        self.collector.start()
        if not self.collector.wait_connected(10):
            self.close()
            raise OSError(f"the collector cannot connect to {endpoint.url()}")
        # The SUBSCRIBE is sent but may not be active yet: probe until a message arrives.
        probe = (f"{prefix}/trucks/muck-accuracy-probe/status".encode(), b"online")
        deadline = time.monotonic() + 10
        while self._received() < 1:
            if time.monotonic() > deadline:
                self.close()
                raise OSError("the collector receives nothing from the broker")
            self.publisher.publish_many([probe])
            time.sleep(0.05)
        self.expected = self._received()

    def _received(self) -> int:
        return int(self.collector.stats.received._value.get())

    def feed(self, messages: list[tuple[str, bytes]]) -> None:
        if not messages:
            return
        self.publisher.publish_many((t.encode(), p) for t, p in messages)
        self.expected += len(messages)
        deadline = time.monotonic() + BROKER_WAIT_S
        while self._received() < self.expected:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the collector stored {self._received()} of {self.expected} messages "
                    f"in {BROKER_WAIT_S:.0f} s"
                )
            time.sleep(0.002)

    def close(self) -> None:
        from simulators.fastpub import FastPublisher

        self.collector.stop()
        self.publisher.close()
        # The collector's session is persistent: end it, so the broker keeps nothing for it.
        try:
            FastPublisher(
                self.endpoint.host,
                self.endpoint.port,
                client_id=self.client_id,
                username=self.endpoint.username,
                password=self.endpoint.password,
            ).close()
        except OSError as exc:
            log.warning("could not clear the collector's MQTT session: %s", exc)


def run_accuracy(
    settings,
    conn,
    city,
    config,
    *,
    hours: float,
    speedup: float = 0.0,
    stop: threading.Event | None = None,
    status: Callable[[object, int, int], None] | None = None,
    transport: str = "inprocess",
    database_url: str | None = None,
    start_ms: int | None = None,
) -> AccuracyResult:
    """Install `city` into `conn`'s database, run its fleet for `hours` simulated hours through
    the broker and the collector (`transport="broker"`, storing into `database_url`, the
    database of `conn`) or the in-process ingestion path, with the rules, and score what the
    platform found. `start_ms` (default: so that the run ends two minutes before now) must
    leave every fix in the past and within the ingest horizon."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
    # The black-truck jobs log every run at INFO; once a simulated minute is noise here.
    quiet = logging.getLogger("black_trucks")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    try:
        return _run(settings, conn, city, config, hours, speedup, stop, status, transport,
                    database_url, start_ms)  # fmt: skip
    finally:
        quiet.setLevel(level)


def _run(settings, conn, city, config, hours, speedup, stop, status, transport, database_url,
         start_ms) -> AccuracyResult:  # fmt: skip
    from black_trucks.devices import scan_unregistered_devices
    from black_trucks.sightings import match_new_sightings
    from compliance.engine import ComplianceEngine
    from compliance.sweep import sweep_dark, sweep_jumps
    from simulators.city import install_city
    from simulators.fleet import Fleet

    stop = stop or threading.Event()
    install_city(conn, settings, city)
    engine = ComplianceEngine(settings)
    engine.load(conn)
    duration = int(hours * 3600)
    if start_ms is None:
        # Fix times stay in the past (the collector refuses future fixes).
        start_ms = int(time.time() * 1000) - duration * 1000 - 120_000
    if start_ms + duration * 1000 > time.time() * 1000:
        raise ValueError("the run would end in the future: fix times must lie in the past")
    if transport == "broker":
        if not database_url:
            raise ValueError("the broker transport needs the database URL for its collector")
        prefix = f"muck-accuracy-{uuid.uuid4().hex[:8]}/v1"  # nothing else publishes there
        config = dataclasses.replace(config, topic_prefix=prefix)
        path = _ThroughBroker(settings, database_url, engine, prefix)
    elif transport == "jt808":
        if not database_url:
            raise ValueError("the jt808 transport needs the database URL for its collector")
        prefix = f"muck-accuracy-{uuid.uuid4().hex[:8]}/v1"
        config = dataclasses.replace(config, topic_prefix=prefix)
        path = _ThroughGateway(settings, database_url, engine, prefix)
    else:
        path = _InProcess(settings, conn, engine)
    fleet = Fleet(city, config, start_ms=start_ms, settings=settings)
    plates = {a.device: a.truck.plate for a in fleet.agents if a.judged and a.device}
    watch = StatusWatch(plates)
    zones = engine.zones
    permits = engine.permits
    fed = 0
    began = time.monotonic()

    def feed(messages) -> None:
        nonlocal fed
        path.feed(messages)
        fed += len(messages)

    def at(ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)

    def clock_jobs(now_ms: int, devices: bool) -> None:
        """What the collector's clock jobs do, at the simulated time."""
        sweep_dark(conn, settings, at(now_ms))
        sweep_jumps(conn, settings)
        match_new_sightings(conn, settings, now=at(now_ms), permits=permits)
        if devices:
            scan_unregistered_devices(conn, settings, now=at(now_ms), zones=zones)
        watch.poll(conn)

    last_status = 0.0
    try:
        while fleet.t < duration and not stop.is_set():
            target = min(duration, fleet.t + CHUNK_S)
            if speedup > 0:
                wait = (target / speedup) - (time.monotonic() - began)
                if wait > 0 and stop.wait(wait):
                    break
            feed(fleet.advance(target))
            clock_jobs(fleet.ms(fleet.t), fleet.t % DEVICE_SCAN_S < CHUNK_S)
            if status is not None and time.monotonic() - last_status >= 1.0:
                status(fleet, fed, duration)
                last_status = time.monotonic()
        fleet.annotate_truth()
        feed(fleet.finish())
        end_ms = fleet.ms(fleet.t)
        clock_jobs(end_ms, True)
        # Sightings still pending at the end are decided as if the match window and its
        # grace had passed (no fix comes after the end of the run).
        match_cfg = settings["compliance"]
        settle_s = 60 * (
            float(match_cfg["anpr_match_window_min"]) + float(match_cfg["anpr_pending_grace_min"])
        )
        match_new_sightings(conn, settings, now=at(end_ms + int(settle_s * 1000) + 1000),
                            permits=permits)  # fmt: skip
    finally:
        path.close()
    if status is not None:
        status(fleet, fed, duration)
    found = stored_violations(conn) + watch.found + listed_black_trucks(conn)
    scores = match(
        merge_truth(fleet.truth, config.interval_s),
        found,
        tolerances_s(settings, config.interval_s),
        end_ms,
        shortest_s(settings, config.interval_s),
    )
    return AccuracyResult(
        seed=city.seed,
        trucks=len(fleet.agents),
        hours=hours,
        simulated_s=fleet.t,
        fixes=fed,
        wall_s=time.monotonic() - began,
        scores=scores,
        stopped=fleet.t < duration,
        transport=transport,
        start_ms=fleet.start_ms,
        black=sum(not a.judged for a in fleet.agents),
    )


class _ThroughGateway(_ThroughBroker):
    """The terminals speak JT/T 808 to a gateway (simulators.jt808 → telemetry.jt808 in a
    thread of this process), which publishes on the contract for the same collector; the
    cameras still publish over MQTT. `feed` returns once every report was acknowledged by the
    gateway (so PUBACKed by the broker) and the collector has committed every message,
    counting the online status the gateway publishes for each authenticated terminal."""

    def __init__(self, settings, database_url: str, engine, prefix: str) -> None:
        from simulators.jt808 import GatewayFleetPublisher
        from telemetry.contract import Topics
        from telemetry.jt808.server import GatewayThread

        super().__init__(settings, database_url, engine, prefix)
        # The fleet runs faster than real time: a terminal sends a simulated minute of
        # reports at once, which a real one never does.
        gateway_settings = self.settings.with_overrides(
            jt808={
                "client_id": self.client_id + "-gw",
                "max_frames_per_s": 1e6,
                "heartbeat_s": 3600.0,
            }
        )
        self.gateway = GatewayThread(gateway_settings)
        try:
            port = self.gateway.start()
        except OSError:
            self.close()
            raise
        self.terminals = GatewayFleetPublisher(
            "127.0.0.1",
            port,
            Topics(prefix),
            lambda messages: self.publisher.publish_many((t.encode(), p) for t, p in messages),
        )

    def feed(self, messages: list[tuple[str, bytes]]) -> None:
        if not messages:
            return
        terminals = self.terminals
        parse = terminals.topics.parse
        before = terminals.authentications + terminals.disconnects
        terminals(messages)
        forwarded = sum(1 for t, _ in messages if (parse(t) or ("", ""))[0] != "status")
        statuses = terminals.authentications + terminals.disconnects - before
        self.expected += forwarded + statuses
        deadline = time.monotonic() + BROKER_WAIT_S
        while self._received() < self.expected:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the collector stored {self._received()} of {self.expected} messages "
                    f"in {BROKER_WAIT_S:.0f} s"
                )
            time.sleep(0.002)

    def close(self) -> None:
        terminals = getattr(self, "terminals", None)
        if terminals is not None:
            terminals.close()
        gateway = getattr(self, "gateway", None)
        if gateway is not None:
            gateway.stop()
        super().close()


# -- a scratch database next to MUCK_DATABASE_URL ------------------------------------------


def scratch_database(url: str) -> tuple[str, str]:
    """Create an empty database on the same server; its name and URL."""
    import psycopg2
    from psycopg2 import sql

    name = "muck_accuracy_" + uuid.uuid4().hex[:8]
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    return name, urlunparse(urlparse(url)._replace(path="/" + name))


def prepare_database(url: str, settings):
    """Connect to a fresh database and migrate it (schema and fix partitions)."""
    from core.db import connect
    from core.migrate import migrate
    from telemetry.partitions import maintain

    conn = connect(url)
    migrate(conn, settings)
    maintain(conn, settings)
    return conn
