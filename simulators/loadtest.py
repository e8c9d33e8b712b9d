"""`muck loadtest`: drive the running platform at a target message rate and account for
every message.

The platform is whatever MUCK_MQTT_URL and MUCK_DATABASE_URL point at, with its collectors
already running (`muck collect`), or K collectors this command starts for convenience
(`--collectors K`). Publishers are separate processes (`simulators.loadgen`); every message
carries its device's sequence number and its publish time, so afterwards the database
itself says what arrived: lost = published (device, seq) pairs with no row; a deliberately
duplicated publish must have exactly one row; latency = `received_at - fix_time`.

The load's devices are `LT-<run>-nnnnn`: unregistered by default (stored with truck_id
NULL, as an unknown terminal's fixes are), or registered as trucks of a scratch company
`loadtest <run>` with `registered=True`, so the compliance rules run on every fix. Every
row the run caused is deleted at the end unless `keep=True`; `clean_leftovers` removes what
an interrupted run left.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql

from core.config import Settings
from core.db import connect_settings
from simulators.cpuwatch import CpuWatch
from simulators.fastpub import FastPublisher
from simulators.loadcompare import Comparison, compare
from simulators.loadgen import (
    PublisherGroup,
    PublisherResult,
    broker_ceiling,
    plans_for,
    register_devices,
    unregister_company,
)

DEVICE_PATTERN = r"^LT-[0-9a-f]{6}-[0-9]+$"
COMPANY_PATTERN = r"^loadtest [0-9a-f]{6}$"
COLLECTOR_ID = "loadtest-collector-{}"
REFERENCE_ID = "loadtest-reference"
COLLECTOR_GROUP = "loadtest"
_FORGET_IDS = 32  # collector sessions `clean_leftovers` forgets (ids 0..31)
_MAX_PER_TRUCK = 100.0  # messages/s one device may send (fix times must differ by ≥ 1 ms)


class LoadtestError(RuntimeError):
    """The load test cannot start (services missing, bad options): a message for the user."""


@dataclass
class LoadtestOptions:
    rate: float
    duration_s: float
    trucks: int = 2000
    publishers: int = 2
    collectors: int = 0
    rules: bool = True  # for the collectors this command starts
    registered: bool = False
    duplicate_pct: float = 1.0
    lose_pct: float = 0.0
    ceiling_messages: int = 200_000
    drain_s: float = 120.0  # longest wait for the collectors to catch up after publishing
    # ... or this long without a new row (a collector's first batch with the rules can take
    # seconds on a loaded machine: catalogues, state).
    quiet_s: float = 30.0
    max_p99_ms: float = 2000.0
    keep: bool = False
    config_path: str | None = None
    # One more collector, with a subscription of its own, stores the same stream into this
    # database; afterwards the two are compared (simulators.loadcompare).
    reference_database: str | None = None
    # SIGKILL collector 0 this many seconds into publishing, and start it again (same
    # client id, as a restart policy would) restart_after_s later.
    kill_collector_at_s: float | None = None
    restart_after_s: float = 5.0

    def check(self) -> None:
        problems = []
        if not self.rate > 0:
            problems.append("--rate must be positive")
        if not self.duration_s > 0:
            problems.append("--duration must be positive")
        if self.trucks < 1:
            problems.append("--trucks must be at least 1")
        if self.publishers < 1:
            problems.append("--publishers must be at least 1")
        elif self.publishers > self.trucks:
            problems.append("--publishers cannot exceed --trucks (each publishes its own trucks)")
        if self.collectors < 0:
            problems.append("--collectors cannot be negative")
        if self.reference_database and not self.collectors:
            problems.append("--reference-database needs --collectors (collectors this run starts)")
        if self.kill_collector_at_s is not None:
            if not self.collectors:
                problems.append("--kill-collector-at needs --collectors")
            elif not 0 < self.kill_collector_at_s < self.duration_s:
                problems.append("--kill-collector-at must fall inside --duration")
            if self.restart_after_s < 0:
                problems.append("--restart-after cannot be negative")
        for name, value in (("--duplicate-pct", self.duplicate_pct), ("--lose-pct", self.lose_pct)):
            if not 0 <= value <= 50:
                problems.append(f"{name} must be between 0 and 50")
        if self.ceiling_messages < 0:
            problems.append("--ceiling-messages cannot be negative")
        if self.trucks >= 1 and self.rate / self.trucks > _MAX_PER_TRUCK:
            problems.append(
                f"{self.rate:,.0f} msg/s from {self.trucks} trucks is more than "
                f"{_MAX_PER_TRUCK:.0f} messages per truck and second: use --trucks "
                f"{int(self.rate / _MAX_PER_TRUCK + 0.999)} or more"
            )
        if problems:
            raise LoadtestError("; ".join(problems))


@dataclass
class ProcessCpu:
    role: str
    pid: int
    label: str
    cpu_s: float
    seconds: float  # how long it was watched
    note: str = ""


@dataclass
class LoadtestResult:
    options: LoadtestOptions
    command: str
    run: str
    broker: str
    database: str
    started: float = 0.0  # time.time() of the first publish
    publish_end: float = 0.0
    ended: float = 0.0
    interrupted: bool = False
    ceiling_rate: float | None = None
    # publishers
    sent: int = 0
    unique: int = 0
    duplicates_sent: int = 0
    voided: int = 0
    publish_seconds: float = 0.0  # until the broker acknowledged the last message
    write_seconds: float = 0.0  # until the last message was written
    publisher_errors: list[str] = field(default_factory=list)
    # database
    stored: int = 0
    store_seconds: float = 0.0
    backlog_at_publish_end: int = 0
    catch_up_s: float | None = None
    # Why the wait for the collectors ended: caught up, quiet (nothing new for quiet_s),
    # timeout (--drain passed while rows were still coming in) or aborted (Ctrl-C twice).
    drain_end: str = ""
    drain_s: float = 0.0
    lost: int = 0
    lost_examples: list[tuple[str, int]] = field(default_factory=list)
    stored_twice: int = 0
    duplicates_once: int = 0
    duplicates_missing: int = 0
    duplicates_more: int = 0
    collector_duplicates: int | None = None
    quarantined: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    # time series, second 0 = first publish
    publish_per_s: list[int] = field(default_factory=list)
    stored_per_s: list[int] = field(default_factory=list)
    latency_per_s: list[tuple[int, float, float, float]] = field(default_factory=list)
    cpu_series: list[tuple[float, dict[str, float], float]] = field(default_factory=list)
    # CPU
    processes: list[ProcessCpu] = field(default_factory=list)
    machine_cpu_s: float = 0.0
    cpu_window_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    # --kill-collector-at: (seconds after the first publish, what happened)
    collector_events: list[tuple[float, str]] = field(default_factory=list)
    comparison: Comparison | None = None  # --reference-database
    reference_stored: int = 0

    # -- derived figures ------------------------------------------------------------------
    @property
    def publish_rate(self) -> float:
        return self.sent / self.publish_seconds if self.publish_seconds else 0.0

    @property
    def unique_rate(self) -> float:
        return self.unique / self.publish_seconds if self.publish_seconds else 0.0

    @property
    def stored_rate(self) -> float:
        return self.stored / self.store_seconds if self.store_seconds else 0.0

    def cpu_by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for p in self.processes:
            totals[p.role] = totals.get(p.role, 0.0) + p.cpu_s
        return totals

    def verdict(self) -> tuple[bool, list[str]]:
        """Whether the target rate held end to end, and every reason it did not."""
        o, reasons = self.options, []
        if self.interrupted:
            reasons.append(
                f"interrupted after {self.publish_seconds:.0f} s of the planned {o.duration_s:.0f} s"
            )
        for error in self.publisher_errors:
            reasons.append(f"a publisher failed: {error}")
        if self.publish_rate < 0.98 * o.rate:
            reasons.append(
                f"the publishers reached {self.publish_rate:,.0f} msg/s, under 98 % of the "
                f"target {o.rate:,.0f}"
            )
        # A collector killed on purpose stops part of the stream until it is back: the run
        # then judges what reached the database, not how fast.
        timed = o.kill_collector_at_s is None
        if timed and self.stored_rate < 0.98 * self.unique_rate:
            reasons.append(
                f"stored {self.stored_rate:,.0f} msg/s, under 98 % of the {self.unique_rate:,.0f} "
                f"distinct messages/s published ({self.backlog_at_publish_end:,} behind when "
                "publishing ended)"
            )
        if self.lost and self.drain_end in ("timeout", "aborted"):
            reasons.append(
                f"{self.lost:,} messages not stored when the run stopped waiting "
                f"({self.drain_s:.0f} s after publishing, rows still coming in): still queued "
                "at the broker or lost — a longer --drain tells"
            )
        elif self.lost:
            on_purpose = f", {self.voided:,} of them on purpose (--lose-pct)" if self.voided else ""
            reasons.append(f"{self.lost:,} messages lost{on_purpose}")
        if self.stored_twice or self.duplicates_more:
            reasons.append(f"{self.stored_twice + self.duplicates_more:,} messages stored twice")
        if (
            self.collector_duplicates is not None
            and self.collector_duplicates < self.duplicates_once
        ):
            reasons.append(
                f"the collectors counted {self.collector_duplicates:,} duplicates, fewer than "
                f"the {self.duplicates_once:,} copies that arrived"
            )
        p99 = self.latency_ms.get("p99")
        if p99 is None:
            reasons.append("no latency: nothing was stored")
        elif timed and p99 > o.max_p99_ms:
            reasons.append(f"latency p99 {p99:,.0f} ms over {o.max_p99_ms:,.0f} ms")
        if o.reference_database:
            if self.comparison is None:
                reasons.append("the reference database was not compared")
            else:
                reasons += self.comparison.problems()
        return not reasons, reasons

    def verdict_line(self) -> str:
        ok, reasons = self.verdict()
        if ok and self.options.kill_collector_at_s is not None:
            return (
                f"PASS: nothing lost or stored twice with a collector killed at "
                f"{self.options.kill_collector_at_s:g} s"
                + (", the same rows and violations as the reference" if self.comparison else "")
                + f" (p99 {self.latency_ms['p99']:,.0f} ms, not judged)"
            )
        if ok:
            return (
                f"PASS: {self.options.rate:,.0f} msg/s held end to end for "
                f"{self.publish_seconds:.0f} s, nothing lost, p99 "
                f"{self.latency_ms['p99']:,.0f} ms"
            )
        return "FAIL: " + "; ".join(reasons)


def real_trucks(conn) -> int:
    """Trucks of this database that no load test or benchmark registered."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*) FROM trucks t LEFT JOIN companies c ON c.id = t.company_id
               WHERE c.name IS NULL OR (c.name !~ %s AND c.name !~ '^bench [0-9a-f]{6}$')""",
            (COMPANY_PATTERN,),
        )
        n = cur.fetchone()[0]
    conn.commit()
    return n


def forget_sessions(settings: Settings, client_ids: list[str]) -> None:
    """Drop the broker sessions of collectors this command started: a clean-session connect
    with the same client id discards the session, whose subscription would otherwise keep
    queueing the platform's traffic for nobody (persistent_client_expiration)."""
    endpoint = settings.mqtt_endpoint()
    for client_id in client_ids:
        try:
            FastPublisher(
                endpoint.host,
                endpoint.port,
                client_id=client_id,
                username=endpoint.username,
                password=endpoint.password,
            ).close()
        except OSError:
            pass


def delete_rows(conn, devices: list[str] | None, since: float | None, company: str | None) -> int:
    """Delete what the load's devices left: fixes, quarantine rows, black-truck entries (and
    the scratch company with everything the rules wrote). `devices=None`: every load test's
    devices, found by their id pattern (a scan of positions)."""
    if devices is None:
        match, params = "device_id ~ %s", (DEVICE_PATTERN,)
        key_match = "key ~ %s"
    else:
        match, params = "device_id = ANY(%s)", (devices,)
        key_match = "key = ANY(%s)"
    time_bound, bound = "", ()
    if since is not None:
        time_bound, bound = " AND fix_time >= to_timestamp(%s)", (since,)
    with conn.cursor() as cur:
        cur.execute(
            f"""WITH gone AS (
                    DELETE FROM positions WHERE {match}{time_bound} RETURNING tableoid
                )
                SELECT n.nspname, c.relname, count(*) FROM gone
                JOIN pg_class c ON c.oid = gone.tableoid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                GROUP BY 1, 2""",  # noqa: S608 - constant fragments
            params + bound,
        )
        partitions = cur.fetchall()
        deleted = sum(n for _, _, n in partitions)
        cur.execute(f"DELETE FROM quarantine WHERE {match}", params)  # noqa: S608
        cur.execute(f"DELETE FROM unregistered_device_days WHERE {match}", params)  # noqa: S608
        cur.execute(f"DELETE FROM black_trucks WHERE kind = 'device' AND {key_match}", params)  # noqa: S608
        cur.execute(f"DELETE FROM device_status WHERE {match}", params)  # noqa: S608
    conn.commit()
    if company is not None:
        unregister_company(conn, company)
    _vacuum(conn, [(nsp, rel) for nsp, rel, n in partitions if n >= 10_000])
    return deleted


def _vacuum(conn, tables: list[tuple[str, str]]) -> None:
    """VACUUM the partitions a large run deleted from: a million dead rows (and their index
    entries) made every later insert and lookup there slower until autovacuum got round to
    it — measured: PostgreSQL's CPU per stored message was 40 µs on a fresh database, 98
    and 193 µs after one and two earlier runs had deleted theirs."""
    if not tables:
        return
    autocommit = conn.autocommit
    conn.autocommit = True  # VACUUM cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            for nsp, rel in tables:
                cur.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(nsp, rel)))
    finally:
        conn.autocommit = autocommit


def clean_leftovers(settings: Settings) -> dict[str, int]:
    """Remove every earlier load test's rows and scratch companies, and forget the broker
    sessions of collectors `--collectors` started (for a run that was killed)."""
    conn = connect_settings(settings, application_name="muck-loadtest")
    try:
        fixes = delete_rows(conn, None, None, None)
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM companies WHERE name ~ %s", (COMPANY_PATTERN,))
            companies = [row[0] for row in cur.fetchall()]
        conn.commit()
        for name in companies:
            unregister_company(conn, name)
    finally:
        conn.close()
    forget_sessions(settings, [COLLECTOR_ID.format(i) for i in range(_FORGET_IDS)])
    return {"fixes": fixes, "companies": len(companies)}


def machine_info(conn, broker_found: bool) -> dict[str, str]:
    info = {
        "host": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cores": str(os.cpu_count()),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        info["memory"] = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except Exception:  # noqa: BLE001 - informational only
        pass
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        info["postgresql"] = cur.fetchone()[0]
    conn.commit()
    binary = shutil.which("mosquitto")
    if binary:
        try:
            out = subprocess.run(
                [binary, "-h"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
            match = re.search(r"mosquitto version (\S+)", out)
            if match:
                info["mosquitto"] = match.group(1) + (
                    ""
                    if broker_found
                    else " (the binary on this machine; the broker's own may differ)"
                )
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


class _Collectors:
    """The collector subprocesses `--collectors K` starts, each logging to a file, and the
    reference collector of `--reference-database` (the last one, its own subscription)."""

    def __init__(self, options: LoadtestOptions, log_dir: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.ids = [COLLECTOR_ID.format(i) for i in range(options.collectors)]
        muck = str(Path(sys.executable).with_name("muck"))
        base = [muck] + (["--config", options.config_path] if options.config_path else [])
        flags = ["--no-maintenance"] + ([] if options.rules else ["--no-rules"])
        shared = ["--shared-group", COLLECTOR_GROUP] if options.collectors > 1 else []
        self.commands = [[*base, "collect", "--client-id", i, *flags, *shared] for i in self.ids]
        self.envs: list[dict[str, str] | None] = [None] * len(self.ids)
        if options.reference_database:
            self.ids.append(REFERENCE_ID)
            self.commands.append([*base, "collect", "--client-id", REFERENCE_ID, *flags])
            self.envs.append({**os.environ, "MUCK_DATABASE_URL": options.reference_database})
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logs = [log_dir / f"{client_id}.log" for client_id in self.ids]
        self.procs = [self._spawn(i) for i in range(len(self.ids))]
        # Log lines of processes killed on purpose: a restarted collector's log starts anew.
        self.earlier_logs: list[str] = ["" for _ in self.ids]

    def _spawn(self, i: int) -> subprocess.Popen:
        with open(self.logs[i], "ab") as log:
            # A session of its own: Ctrl-C in the terminal stops the load test, which
            # then lets these collectors finish the backlog before stopping them.
            return subprocess.Popen(
                self.commands[i],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.envs[i],
            )

    def kill(self, i: int) -> None:
        """SIGKILL: no shutdown, nothing committed beyond the last batch (a crash)."""
        self.procs[i].kill()
        self.procs[i].wait()
        self.earlier_logs[i] += self.logs[i].read_text(errors="replace")
        self.logs[i].write_bytes(b"")

    def restart(self, i: int) -> None:
        self.procs[i] = self._spawn(i)

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def failed(self) -> str | None:
        for proc, log, client_id in zip(self.procs, self.logs, self.ids, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                return f"collector {client_id} exited ({proc.returncode}): " + " | ".join(tail)
        return None

    def stop(self) -> int | None:
        """Stop them (SIGTERM: each commits what it holds) and add up their duplicates."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        total, complete = 0, True
        for proc, log, client_id in zip(self.procs, self.logs, self.ids, strict=True):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if client_id == REFERENCE_ID:
                continue  # its duplicates are those of another stream copy
            found = re.findall(r"duplicates=(\d+)", log.read_text(errors="replace"))
            if found:
                total += int(found[-1])
            else:
                complete = False
        # A killed collector never logs its count: the total is then unknown.
        if any(self.earlier_logs):
            complete = False
        return total if complete and self.procs else None


@dataclass
class _Live:
    """What the status line shows."""

    t: float = 0.0
    sent: int = 0
    storable: int = 0
    stored: int = 0
    sent_rate: float = 0.0
    stored_rate: float = 0.0
    cores: float = 0.0
    phase: str = "load"

    def line(self, duration: float) -> str:
        return (
            f"[{self.phase} {self.t:5.0f}/{duration:.0f} s] published {self.sent:,} "
            f"({self.sent_rate:,.0f}/s)  stored {self.stored:,} ({self.stored_rate:,.0f}/s)  "
            f"behind {max(0, self.storable - self.stored):,}  machine CPU {self.cores:.2f} cores"
        )


def _count(conn, devices: list[str], since: float) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM positions WHERE device_id = ANY(%s) "
            "AND fix_time >= to_timestamp(%s)",
            (devices, since),
        )
        n = cur.fetchone()[0]
    conn.commit()
    return n


class _Counter:
    """Counts the load's stored rows while it runs. An exact count reads every row stored so
    far: every 2 s over a 1 M-row run that cost the database about 10 µs per message, a load
    of its own. Live figures count a sample of about 100 devices and scale up (devices get
    equal shares of the load); the exact count is taken when the estimate says all is in."""

    def __init__(self, conn, devices: list[str], since: float) -> None:
        self.conn, self.devices, self.since = conn, devices, since
        self.sample = devices[:: max(1, len(devices) // 100)]
        self.scale = len(devices) / len(self.sample)

    def estimate(self) -> int:
        if len(self.sample) == len(self.devices):
            return self.exact()
        return round(_count(self.conn, self.sample, self.since) * self.scale)

    def exact(self) -> int:
        return _count(self.conn, self.devices, self.since)


def run_loadtest(
    settings: Settings,
    options: LoadtestOptions,
    *,
    work_dir: Path,
    command: str = "",
    stop: threading.Event | None = None,
    abort: threading.Event | None = None,
    status: Callable[[str], None] | None = None,
) -> LoadtestResult:
    """Run the load and do the bookkeeping. `stop` ends publishing early (the collectors
    still catch up); `abort` also cuts the catch-up short. Raises LoadtestError when the run
    cannot start; once publishing has begun, problems end up in the result instead."""
    options.check()
    stop = stop or threading.Event()
    abort = abort or threading.Event()
    say = status or (lambda _line: None)
    endpoint = settings.mqtt_endpoint()
    if endpoint.tls:
        raise LoadtestError(
            f"MUCK_MQTT_URL is {endpoint.safe_url()}: the load test publishes over plain "
            "MQTT; point it at the broker's plain listener (mqtt://)"
        )
    url = endpoint.url()
    run = uuid.uuid4().hex[:6]
    devices = [f"LT-{run}-{i:05d}" for i in range(options.trucks)]
    company = f"loadtest {run}" if options.registered else None
    result = LoadtestResult(
        options,
        command,
        run,
        broker=f"{endpoint.host}:{endpoint.port}",
        database=redact(settings.database_url or ""),
    )
    try:
        conn = connect_settings(settings, application_name="muck-loadtest")
        with conn.cursor() as cur:
            # The counts are small index scans; JIT compiling them cost 100+ ms each.
            cur.execute("SET jit = off")
        conn.commit()
    except Exception as exc:
        raise LoadtestError(f"cannot connect to the database: {exc}") from None
    try:
        FastPublisher(
            endpoint.host, endpoint.port, username=endpoint.username, password=endpoint.password
        ).close()
    except OSError as exc:
        conn.close()
        raise LoadtestError(f"cannot connect to the broker at {result.broker}: {exc}") from None

    reference = None
    if options.reference_database:
        try:
            reference = psycopg2.connect(
                options.reference_database, application_name="muck-loadtest"
            )
        except Exception as exc:
            conn.close()
            raise LoadtestError(f"cannot connect to the reference database: {exc}") from None
        difference = setup_difference(conn, reference)
        if difference:
            conn.close()
            reference.close()
            raise LoadtestError(
                f"the reference database is not set up like the main one ({difference}): "
                "make it a copy (CREATE DATABASE … TEMPLATE …)"
            )

    watch = CpuWatch()
    watch.add("loadtest", os.getpid(), "muck loadtest (this process)")
    collectors: _Collectors | None = None
    since = time.time() - 5.0
    try:
        if company:
            register_devices(conn, company, f"LT{run}", devices)
            if reference is not None:
                register_devices(reference, company, f"LT{run}", devices)
        if options.ceiling_messages:
            say(f"broker ceiling: {options.ceiling_messages:,} messages to an ack-only subscriber")
            result.ceiling_rate = broker_ceiling(url, options.ceiling_messages, options.publishers)
        if options.collectors:
            collectors = _Collectors(options, work_dir)
            say(f"starting {options.collectors} collector(s)")
            time.sleep(3.0)  # connect, subscribe, load the rules' catalogues
            failure = collectors.failed()
            if failure:
                raise LoadtestError(failure)
        watch.find_broker(endpoint.host, endpoint.port)
        own = collectors.pids if collectors else set()
        found = watch.find_collectors(settings.database_url or "", own)
        if not found:
            result.notes.append(
                "collector: no `muck collect` process writing to this database was found on "
                "this machine (a collector elsewhere is not measured)"
            )
        elif collectors and found > len(own):
            result.notes.append(
                f"collector: {found - len(own)} other collector(s) of this database run as "
                "well and may take part of the load"
            )
        watch.find_postgres(conn, settings.database_url or "")
        result.machine = machine_info(
            conn, any(w.role == "mosquitto" for w in watch.procs.values())
        )
        result.machine["load average at start"] = _loadavg()

        start_at = time.time() + 2.0
        group = PublisherGroup(
            plans_for(
                url,
                settings.mqtt["topic_prefix"],
                devices,
                options.publishers,
                rate=options.rate,
                duration_s=options.duration_s,
                start_at=start_at,
                duplicate_pct=options.duplicate_pct,
                lose_pct=options.lose_pct,
                seed=int(run, 16),
            )
        ).start()
        for i, pid in enumerate(group.pids):
            watch.add("publisher", pid, f"publisher {i}")
        result.started = start_at
        while time.time() < start_at:
            time.sleep(0.05)
        watch.restart()
        live = _Live()
        counter = _Counter(conn, devices, since)
        schedule = _KillSchedule(options, collectors, watch, result, say)
        results = _publish_phase(
            conn, group, watch, counter, options, settings, own, live, stop, say, schedule
        )
        result.interrupted = stop.is_set()
        result.publish_end = time.time()
        _merge_publishers(result, results, watch, group.pids)
        stored = counter.exact()
        result.backlog_at_publish_end = max(0, result.unique - result.voided - stored)
        schedule.finish()
        _drain(counter, result, options, watch, live, abort, say)
        if reference is not None:
            reference_counter = _Counter(reference, devices, since)
            say("waiting for the reference collector")
            _drain(reference_counter, _ReferenceDrain(result), options, watch, live, abort, say)
            result.reference_stored = reference_counter.exact()
        watch.sample()
        result.machine["load average at end"] = _loadavg()
        _bookkeeping(conn, result, devices, since, results)
        if reference is not None:
            say("comparing with the reference database")
            result.comparison = compare(conn, reference, devices, since)
    finally:
        if collectors is not None:
            result.collector_duplicates = collectors.stop()
            forget_sessions(settings, collectors.ids)
        result.ended = time.time()
        _record_cpu(result, watch)
        try:
            if options.keep:
                result.notes.append(
                    f"rows kept (--keep): devices LT-{run}-*"
                    + (f", company {company!r}" if company else "")
                    + "; remove them with `muck loadtest --clean`"
                )
            else:
                say("removing the load's rows")
                delete_rows(conn, devices, since, company)
                if reference is not None:
                    delete_rows(reference, devices, since, company)
        finally:
            conn.close()
            if reference is not None:
                reference.close()
    return result


def setup_difference(main, reference) -> str:
    """How the reference database differs from the main one in what the rules read (zones,
    permits, the registry's other trucks), or "" when it does not."""
    checks = (
        (
            "zones",
            "SELECT count(*), coalesce(md5(string_agg(concat_ws(',', code, kind, active, "
            "valid_from, valid_to, geometry, attributes), '|' ORDER BY code)), '') "
            "FROM geofence_zones",
        ),
        (
            "permits",
            "SELECT count(*), coalesce(md5(string_agg(number, '|' ORDER BY number)), '') "
            "FROM permits",
        ),
    )
    for name, query in checks:
        values = []
        for conn in (main, reference):
            with conn.cursor() as cur:
                cur.execute(query)
                values.append(cur.fetchone())
            conn.commit()
        if values[0] != values[1]:
            return f"{name}: {values[0][0]} here, {values[1][0]} there"
    return ""


class _ReferenceDrain:
    """The fields `_drain` writes, for the reference collector's wait (kept apart from the
    main result's figures); the target is the main run's."""

    def __init__(self, result: LoadtestResult) -> None:
        self.unique, self.voided = result.unique, result.voided
        self.catch_up_s: float | None = None
        self.drain_end = ""
        self.drain_s = 0.0


class _KillSchedule:
    """`--kill-collector-at`: SIGKILL collector 0 mid-stream, start it again later."""

    def __init__(self, options, collectors, watch, result, say) -> None:
        self.at = options.kill_collector_at_s
        self.restart_at = None if self.at is None else self.at + options.restart_after_s
        self.collectors, self.watch, self.result, self.say = collectors, watch, result, say
        self.killed = self.restarted = False

    def tick(self, t: float) -> None:
        if self.at is None or self.collectors is None:
            return
        if not self.killed and t >= self.at:
            self.collectors.kill(0)
            self.killed = True
            self._event(t, f"SIGKILL {self.collectors.ids[0]}")
        if self.killed and not self.restarted and t >= self.restart_at:
            self.finish(t)

    def finish(self, t: float | None = None) -> None:
        """Restart the killed collector now if it is still down (publishing has ended)."""
        if not self.killed or self.restarted:
            return
        self.collectors.restart(0)
        self.restarted = True
        pid = self.collectors.procs[0].pid
        self.watch.add("collector", pid, f"{self.collectors.ids[0]} (restarted)")
        t = t if t is not None else time.time() - self.result.started
        self._event(t, f"restarted {self.collectors.ids[0]} (same client id)")

    def _event(self, t: float, what: str) -> None:
        self.result.collector_events.append((t, what))
        self.say(f"{t:.0f} s: {what}")


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def _publish_phase(
    conn, group, watch, counter, options, settings, own, live, stop, say, schedule
) -> list[PublisherResult]:
    last_t, last_sent, last_stored, last_busy = time.time(), 0, 0, watch.machine_first
    tick = 0
    stopping = False
    while group.running():
        time.sleep(1.0)
        tick += 1
        if stop.is_set() and not stopping:
            group.stop()
            stopping = True
        watch.sample()
        if tick % 5 == 0:
            # A collector opens its database connection with its first batch.
            watch.find_postgres(conn, settings.database_url or "")
            watch.find_collectors(settings.database_url or "", own)
        now = time.time()
        live.sent, live.storable = group.sent(), group.storable()
        live.t = now - watch.started
        schedule.tick(live.t)
        if tick % 2 == 0:
            # Counting costs the database a little: every 2 s is enough for a status line.
            live.stored = counter.estimate()
            live.stored_rate = (live.stored - last_stored) / (now - last_t)
            live.sent_rate = (live.sent - last_sent) / (now - last_t)
            live.cores = (watch.machine_last - last_busy) / (now - last_t)
            last_t, last_sent, last_stored, last_busy = (
                now,
                live.sent,
                live.stored,
                watch.machine_last,
            )
            say(live.line(options.duration_s))
    return group.join()


def _merge_publishers(result: LoadtestResult, results, watch: CpuWatch, pids) -> None:
    per_second: list[int] = []
    for pid, r in zip(pids, results, strict=False):
        result.sent += r.sent
        result.unique += r.unique
        result.duplicates_sent += r.duplicates
        result.voided += r.voided
        result.publish_seconds = max(result.publish_seconds, r.seconds)
        result.write_seconds = max(result.write_seconds, r.write_seconds)
        if r.error:
            result.publisher_errors.append(r.error)
        if r.cpu_s:
            watch.set_cpu(pid, r.cpu_s)
        for i, n in enumerate(r.per_second):
            while len(per_second) <= i:
                per_second.append(0)
            per_second[i] += n
    result.publish_per_s = per_second


def _drain(counter: _Counter, result, options, watch, live, abort, say) -> None:
    """Wait for the collectors to store what was published (they may be behind)."""
    target = result.unique - result.voided
    began = last_change = time.time()
    last = -1
    live.phase = "catch-up"
    result.drain_end = "aborted"
    while not abort.is_set():
        estimate = counter.estimate()
        now = time.time()
        moved = estimate != last
        if moved:
            last, last_change = estimate, now
        stored = estimate
        # The estimate scales a sample up and can settle a little off the target: count
        # exactly once it is close, or as soon as it stops moving.
        if estimate >= 0.99 * target or not moved:
            stored = counter.exact()
            if stored >= target:
                result.catch_up_s = time.time() - began
                result.drain_end = "caught up"
                break
        if now - last_change > options.quiet_s:
            result.drain_end = "quiet"
            break
        if now - began > options.drain_s:
            result.drain_end = "timeout"
            break
        watch.sample()
        live.t, live.stored, live.storable = now - watch.started, stored, target
        live.stored_rate = live.sent_rate = 0.0
        say(live.line(options.duration_s))
        time.sleep(1.0)
    result.drain_s = time.time() - began


def _bookkeeping(conn, result: LoadtestResult, devices, since, results) -> None:
    """What the database says arrived, per published (device, seq)."""
    expected: dict[str, int] = {}
    duplicated: list[tuple[str, int]] = []
    for r in results:
        expected.update(r.last_seq)
        duplicated += r.duplicated
    start = result.started
    with conn.cursor() as cur:
        cur.execute(
            """SELECT device_id, count(*), count(DISTINCT seq) FROM positions
               WHERE device_id = ANY(%s) AND fix_time >= to_timestamp(%s)
               GROUP BY device_id""",
            (devices, since),
        )
        rows = {d: (n, distinct) for d, n, distinct in cur.fetchall()}
        result.stored = sum(n for n, _ in rows.values())
        result.stored_twice = sum(n - distinct for n, distinct in rows.values())
        short = [(d, last) for d, last in sorted(expected.items()) if rows.get(d, (0, 0))[1] < last]
        result.lost = sum(last - rows.get(d, (0, 0))[1] for d, last in expected.items())
        for d, last in short[:5]:
            cur.execute(
                """SELECT s FROM generate_series(1, %s) s
                   EXCEPT SELECT seq FROM positions
                          WHERE device_id = %s AND fix_time >= to_timestamp(%s)
                   ORDER BY 1 LIMIT 3""",
                (last, d, since),
            )
            result.lost_examples += [(d, s) for (s,) in cur.fetchall()]
        if duplicated:
            cur.execute(
                """WITH dup AS (
                       SELECT * FROM unnest(%s::text[], %s::bigint[]) AS x(device_id, seq)
                   ), ours AS MATERIALIZED (
                       SELECT device_id, seq FROM positions
                       WHERE device_id = ANY(%s) AND fix_time >= to_timestamp(%s)
                   )
                   SELECT n, count(*) FROM (
                       SELECT dup.device_id, dup.seq, count(ours.seq) AS n
                       FROM dup LEFT JOIN ours USING (device_id, seq)
                       GROUP BY dup.device_id, dup.seq
                   ) y GROUP BY n""",
                (
                    [d for d, _ in duplicated],
                    [s for _, s in duplicated],
                    sorted({d for d, _ in duplicated}),
                    since,
                ),
            )
            for n, k in cur.fetchall():
                if n == 0:
                    result.duplicates_missing += k
                elif n == 1:
                    result.duplicates_once += k
                else:
                    result.duplicates_more += k
        cur.execute(
            """SELECT reason, count(*) FROM quarantine
               WHERE received_at >= to_timestamp(%s) AND device_id = ANY(%s)
               GROUP BY reason ORDER BY reason""",
            (since, devices),
        )
        result.quarantined = dict(cur.fetchall())
        cur.execute(
            """SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms),
                      max(ms), max(extract(epoch FROM received_at))
               FROM (SELECT received_at,
                            extract(epoch FROM received_at - fix_time) * 1000 AS ms
                     FROM positions WHERE device_id = ANY(%s)
                       AND fix_time >= to_timestamp(%s)) x""",
            (devices, since),
        )
        pcts, worst, last_received = cur.fetchone()
        if pcts is not None:
            result.latency_ms = {
                "p50": pcts[0],
                "p95": pcts[1],
                "p99": pcts[2],
                "max": float(worst),
            }
            result.store_seconds = max(1e-3, float(last_received) - start)
        cur.execute(
            """SELECT floor(extract(epoch FROM received_at) - %s)::int AS s, count(*)
               FROM positions WHERE device_id = ANY(%s) AND fix_time >= to_timestamp(%s)
               GROUP BY 1 ORDER BY 1""",
            (start, devices, since),
        )
        per_s: list[int] = []
        for s, n in cur.fetchall():
            if s < 0:
                continue
            while len(per_s) <= s:
                per_s.append(0)
            per_s[s] = n
        result.stored_per_s = per_s
        cur.execute(
            """SELECT greatest(0, floor(extract(epoch FROM fix_time) - %s))::int AS s,
                      percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY ms), max(ms)
               FROM (SELECT fix_time, extract(epoch FROM received_at - fix_time) * 1000 AS ms
                     FROM positions WHERE device_id = ANY(%s)
                       AND fix_time >= to_timestamp(%s)) x
               GROUP BY 1 ORDER BY 1""",
            (start, devices, since),
        )
        result.latency_per_s = [(s, p[0], p[1], float(m)) for s, p, m in cur.fetchall()]
    conn.commit()


def _record_cpu(result: LoadtestResult, watch: CpuWatch) -> None:
    result.processes = [
        ProcessCpu(w.role, w.pid, w.label, w.cpu_s, w.last_seen - w.first_seen, w.note)
        for w in sorted(watch.procs.values(), key=lambda w: (_role_order(w.role), w.pid))
    ]
    result.machine_cpu_s = watch.machine_cpu_s
    result.cpu_window_s = max(0.0, watch.ended - watch.started)
    result.cpu_series = list(watch.series)
    result.notes = watch.notes + result.notes


def _role_order(role: str) -> int:
    from simulators.cpuwatch import ROLES

    return ROLES.index(role) if role in ROLES else len(ROLES)
