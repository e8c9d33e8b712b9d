"""`muck bench jt808`: the JT/T 808 gateway under load, end to end.

Two measurements, each with the real `muck gateway jt808` and `muck collect` as processes
of their own, simulated terminals spread over several client processes (one process
cannot hold 20,000 sockets under this machine's open-files limit, and its Python would be
measured instead of the gateway's):

* idle connections: how many registered, authenticated terminals one gateway process holds,
  and its resident memory per idle connection (RSS after minus before, over the count);
* a steady fleet (`--rate`): the connected terminals stay connected and each sends a report
  every 1/rate seconds, as a real fleet does; the stored rate, and the time from sending a
  report to its 0x8001, with every connection open;
* location reports: terminals sending 0x0200 reports as fast as the gateway acknowledges
  them (a few unacknowledged per terminal, as terminals do), each acknowledged after the
  broker's PUBACK; the rate is the rows stored per second in `positions`, measured from the
  database (first to last `received_at`), so it is the end-to-end figure.

The run registers its own terminals (phones unique to the run) and deletes its rows after.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from core.config import Settings
from core.db import connect_settings
from simulators.loadgen import register_devices, unregister_company
from telemetry.jt808 import messages as m
from telemetry.jt808.frames import Frame, FrameSplitter, decode_frame, encode_frame


@dataclass
class Jt808BenchReport:
    idle_target: int
    idle_connected: int = 0
    idle_seconds: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    open_files_limit: int = 0
    report_terminals: int = 0
    gateway_processes: int = 1
    acked: int = 0
    stored: int = 0
    store_seconds: float = 0.0
    client_processes: int = 0
    steady_rate: float = 0.0  # reports/s per terminal asked for (0: the fleet stays idle)
    steady_seconds: float = 0.0
    steady_sent: int = 0
    steady_acked: int = 0
    steady_stored: int = 0
    steady_store_seconds: float = 0.0
    steady_latency_ms: dict[str, float] = field(default_factory=dict)
    steady_gateway_cpu_s: float = 0.0
    gateway_refused: int | None = None  # publishes refused at once (broker window full, away)
    direct: bool = False
    cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def kb_per_connection(self) -> float:
        if not self.idle_connected:
            return 0.0
        return (self.rss_after_mb - self.rss_before_mb) * 1024 / self.idle_connected

    def __str__(self) -> str:
        lines = [
            f"open files limit (soft = hard): {self.open_files_limit}",
            f"idle connections: {self.idle_connected:,} of {self.idle_target:,} registered and "
            f"authenticated in {self.idle_seconds:.1f} s ({self.client_processes} client "
            "processes)",
            f"gateway RSS ({self.gateway_processes} process"
            f"{'es' if self.gateway_processes > 1 else ''}): {self.rss_before_mb:.1f} MB "
            f"before, {self.rss_after_mb:.1f} MB with "
            f"them: {self.kb_per_connection:.1f} KB per idle connection",
        ]
        if self.steady_rate:
            stored_rate = (
                self.steady_stored / self.steady_store_seconds if self.steady_store_seconds else 0
            )
            latency = ", ".join(f"{k} {v:.0f} ms" for k, v in self.steady_latency_ms.items())
            unacked = self.steady_sent - self.steady_acked
            refused = (
                f", {self.gateway_refused:,} of them refused by the gateway at once (its broker "
                "window, jt808.max_inflight, full: no 0x8001, a real terminal sends them again; "
                "this bench does not)"
                if self.gateway_refused
                else ""
            )
            who = "gateway and collector" if self.direct else "gateway"
            lines.append(
                f"steady fleet: {self.idle_connected:,} terminals at {self.steady_rate:g} "
                f"report/s each for {self.steady_seconds:g} s: {self.steady_sent:,} sent "
                f"({self.steady_sent / max(self.steady_seconds, 1e-9):,.0f}/s), "
                f"{self.steady_acked:,} acknowledged ({unacked:,} not{refused}), "
                f"{self.steady_stored:,} stored: {stored_rate:,.0f} reports/s end to end; "
                f"report to 0x8001 of the acknowledged ones: {latency}; {who} CPU from the "
                f"first report to the last acknowledgement {self.steady_gateway_cpu_s:.1f} s "
                f"({1e6 * self.steady_gateway_cpu_s / max(1, self.steady_acked):.0f} µs per "
                "acknowledged report)"
            )
        if self.report_terminals:
            rate = self.stored / self.store_seconds if self.store_seconds else 0.0
            lines.append(
                f"location reports: {self.report_terminals} terminals, {self.acked:,} "
                f"acknowledged, {self.stored:,} stored in {self.store_seconds:.1f} s: "
                f"{rate:,.0f} reports/s end to end into the database"
            )
        if self.cpu:
            lines.append(
                "CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.cpu.items()))
            )
        lines += self.notes
        return "\n".join(lines)


# --- the simulated terminals (in client processes) ------------------------------------------


class _Terminal:
    def __init__(self, phone: str, reader, writer) -> None:
        self.phone, self.reader, self.writer = phone, reader, writer
        self.splitter = FrameSplitter(1 << 16)
        self.serial = 0
        self.frames: list[Frame] = []

    def send(self, msg_id: int, body: bytes) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        self.writer.write(encode_frame(msg_id, self.phone, self.serial, body))
        return self.serial

    async def next_frame(self) -> Frame | None:
        while not self.frames:
            data = await self.reader.read(65536)
            if not data:
                return None
            raws, _ = self.splitter.feed(data)
            self.frames += [f for f in map(decode_frame, raws) if isinstance(f, Frame)]
        return self.frames.pop(0)


async def _open(host: str, port: int, phone: str, source: str) -> _Terminal | None:
    try:
        # A source address per client process: one address's ephemeral ports (about 28,000)
        # would cap the connections to one gateway port.
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    except OSError:
        return None
    term = _Terminal(phone, reader, writer)
    reg = m.Registration(44, 300, "BENCH", "B-808", "", 2, "")
    term.send(m.REGISTER, m.encode_register(reg, 2013))
    reply = await term.next_frame()
    if reply is None or reply.msg_id != m.REGISTER_REPLY:
        return None
    answer = m.decode_register_reply(reply.body)
    if answer.result != m.REGISTERED:
        return None
    term.send(m.AUTHENTICATE, m.encode_authenticate(m.Authentication(answer.auth_code), 2013))
    reply = await term.next_frame()
    if reply is None or m.decode_general_reply(reply.body).result != m.OK:
        return None
    return term


async def _report_loop(term: _Terminal, deadline: float, window: int, base_ms: int) -> int:
    """Reports with unique fix times, `window` unacknowledged at most; the acks counted."""
    acked, sent, k = 0, 0, 0
    lat = 22.5 + (int(term.phone[-4:]) % 1000) / 1e4

    def next_body() -> bytes:
        nonlocal k
        k += 1
        loc = m.Location(0, 0x0303, lat, 114.05, 10, 30.0, 90, base_ms + k * 1000)
        return m.encode_location(loc)

    while sent < window:
        term.send(m.LOCATION, next_body())
        sent += 1
    while True:
        frame = await term.next_frame()
        if frame is None:
            return acked
        if frame.msg_id == m.PLATFORM_REPLY and m.decode_general_reply(frame.body).result == 0:
            acked += 1
            if time.time() < deadline:
                term.send(m.LOCATION, next_body())
            elif acked >= sent:
                return acked
            else:
                continue
            sent += 1


class _SteadyTerminal(asyncio.Protocol):
    """An authenticated terminal of the steady fleet, its socket taken over from the stream
    that registered it: reports on the client's clock, acknowledgements timed."""

    def __init__(self, term: _Terminal, base_ms: int, latencies: list[float]) -> None:
        self.term = term
        self.splitter = FrameSplitter(1 << 16)
        self.lat = 22.5 + (int(term.phone[-4:]) % 1000) / 1e4
        self.base_ms = base_ms
        self.fixes = 0
        self.sent_at: dict[int, float] = {}
        self.latencies = latencies
        self.acked = 0

    def report(self, now: float) -> None:
        self.fixes += 1
        loc = m.Location(
            0, 0x0303, self.lat, 114.05, 10, 30.0, 90, self.base_ms + self.fixes * 1000
        )
        self.sent_at[self.term.send(m.LOCATION, m.encode_location(loc))] = now

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        raws, _ = self.splitter.feed(data)
        for raw in raws:
            frame = decode_frame(raw)
            if not isinstance(frame, Frame) or frame.msg_id != m.PLATFORM_REPLY:
                continue
            reply = m.decode_general_reply(frame.body)
            if reply.result == m.OK and reply.reply_id == m.LOCATION:
                sent = self.sent_at.pop(reply.reply_serial, None)
                if sent is not None:
                    self.acked += 1
                    self.latencies.append(now - sent)

    def connection_lost(self, exc) -> None:
        pass


_TICK_S = 0.02


def _slots(rate: float) -> int:
    """Ticks between two reports of one terminal: the rate is 1 / (slots * tick)."""
    return max(1, round(1.0 / (rate * _TICK_S)))


async def _steady(terms: list[_Terminal], rate: float, seconds: float, base_ms: int):
    """Every terminal reports once per 1/rate s, spread evenly over 20 ms ticks; then the
    acknowledgements still in flight are waited for (at most 10 s)."""
    latencies: list[float] = []
    fleet = []
    for term in terms:
        proto = _SteadyTerminal(term, base_ms, latencies)
        term.writer.transport.set_protocol(proto)
        fleet.append(proto)
    tick = _TICK_S
    slots = _slots(rate)
    groups = [fleet[k::slots] for k in range(slots)]
    start = time.monotonic()
    n = 0
    while time.monotonic() < start + seconds:
        now = time.monotonic()
        for proto in groups[n % slots]:
            proto.report(now)
        n += 1
        await asyncio.sleep(max(0.0, start + n * tick - time.monotonic()))
    sent = sum(p.fixes for p in fleet)
    drain_until = time.monotonic() + 10.0
    while sum(p.acked for p in fleet) < sent and time.monotonic() < drain_until:
        await asyncio.sleep(0.1)
    return sent, sum(p.acked for p in fleet), latencies


@dataclass
class _ClientPlan:
    """What one client process does (handed to it whole: spawn pickles it)."""

    host: str
    port: int
    source: str  # its source address
    phones: list[str]  # the terminals it holds (idle, or the steady fleet)
    hold_s: float
    report_phones: list[str]  # the terminals of the windowed report part
    report_s: float
    window: int
    base_ms: int
    queue: Any
    rate: float
    go: Any  # set by the bench: start the steady fleet's clock
    measured: Any  # set by the bench: the steady phase's CPU is read, disconnect


async def _client(plan: _ClientPlan) -> None:
    began = time.monotonic()
    gate = asyncio.Semaphore(200)

    async def one(phone: str) -> _Terminal | None:
        async with gate:
            return await _open(plan.host, plan.port, phone, plan.source)

    terms = [t for t in await asyncio.gather(*(one(p) for p in plan.phones)) if t is not None]
    plan.queue.put(("connected", len(terms), time.monotonic() - began))
    loop = asyncio.get_running_loop()
    if plan.rate > 0:
        # Every client starts its clock together, once the bench has read the gateway's
        # memory and CPU, and disconnects only after the CPU was read again.
        await loop.run_in_executor(None, plan.go.wait, 600)
        plan.queue.put(("steady", *await _steady(terms, plan.rate, plan.report_s, plan.base_ms)))
        await loop.run_in_executor(None, plan.measured.wait, 600)
    else:
        await asyncio.sleep(plan.hold_s)
    for t in terms:
        t.writer.close()
    acked = 0
    if plan.report_phones:
        reporters = [t for t in await asyncio.gather(*(one(p) for p in plan.report_phones)) if t]
        start_at = time.time()
        counts = await asyncio.gather(
            *(
                _report_loop(t, start_at + plan.report_s, plan.window, plan.base_ms)
                for t in reporters
            )
        )
        acked = sum(counts)
        for t in reporters:
            t.writer.close()
    plan.queue.put(("acked", acked, resource.getrusage(resource.RUSAGE_SELF).ru_utime))


def _client_process(plan: _ClientPlan) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_client(plan))


# --- the run ----------------------------------------------------------------------------------


class _GatewayProcesses:
    """The gateway: one process, or the supervisor of `--processes` and its workers."""

    def __init__(self, pid: int) -> None:
        self.main = psutil.Process(pid)
        self.procs = [self.main] + self.main.children()

    def rss_mb(self) -> float:
        return sum(p.memory_info().rss for p in self.procs) / 2**20

    def cpu_s(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.procs)


class _Replies:
    """What the client processes put on the queue, by phase: one client may be a phase
    ahead of another, so a reply of the next phase is kept until asked for. A client that
    died is reported at once, not after the phase's timeout."""

    def __init__(self, queue, procs: list) -> None:
        self.queue = queue
        self.procs = procs
        self.early: list[tuple] = []

    def take(self, tag: str, count: int, timeout: float) -> list[tuple]:
        import queue as queue_module

        deadline = time.monotonic() + timeout
        taken = [r for r in self.early if r[0] == tag]
        self.early = [r for r in self.early if r[0] != tag]
        while len(taken) < count:
            try:
                reply = self.queue.get(timeout=1.0)
            except queue_module.Empty:
                dead = [p.pid for p in self.procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"client process(es) {dead} died before {tag!r}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{len(taken)} of {count} clients reached {tag!r} in {timeout:g} s"
                    ) from None
                continue
            (taken if reply[0] == tag else self.early).append(reply)
        return taken


def _wait_for_port(proc, port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = proc.stderr.read() if proc.stderr else "(see the collector log)"
            raise RuntimeError(f"the gateway exited: {said}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the gateway does not listen on {port}")


def run_jt808_bench(
    settings: Settings,
    *,
    idle: int,
    clients: int,
    report_terminals: int,
    report_s: float,
    window: int,
    rules: bool = False,
    hold_s: float = 5.0,
    gateway_processes: int = 1,
    direct: bool = False,
    rate: float = 0.0,
    writer_lanes: int | None = None,
) -> Jt808BenchReport:
    report = Jt808BenchReport(idle)
    report.gateway_processes = gateway_processes
    report.client_processes = clients
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    report.open_files_limit = hard
    run = uuid.uuid4().hex[:6]
    digits = f"{int(run, 16) % 10_000:04d}"
    idle_phones = [f"{digits}{i:08d}" for i in range(idle)]
    report_phones = [f"{digits}{90_000_000 + i:08d}" for i in range(report_terminals)]
    phones = idle_phones + report_phones
    prefix = f"bench-{run}/v1"
    port = _free_port()
    config = Path(tempfile.mkdtemp(prefix="muck-bench-")) / "bench.toml"
    config.write_text(
        f'[mqtt]\ntopic_prefix = "{prefix}"\n'
        f'[jt808]\nclient_id = "bench-{run}-gw"\nheartbeat_s = 3600.0\n'
        "auth_timeout_s = 600.0\nmax_frames_per_s = 100000.0\n"
        + (f"[ingest]\nwriter_lanes = {writer_lanes}\n" if writer_lanes is not None else "")
    )
    env = {**os.environ, "MUCK_CONFIG": str(config)}
    muck = str(Path(sys.executable).with_name("muck"))
    conn = connect_settings(settings, application_name="muck-bench")
    company = f"bench jt808 {run}"
    register_devices(conn, company, f"BJT{run}", phones)
    flags = ["--no-maintenance"] + ([] if rules else ["--no-rules"])
    collector_log = config.with_name("collector.log").open("w")
    gateway_log = config.with_name("gateway.log").open("w")
    if os.environ.get("MUCK_BENCH_DEBUG"):
        print("collector log:", collector_log.name, flush=True)
    if direct:  # one process: the gateway writes through the collector, no broker
        flags += ["--jt808", f"127.0.0.1:{port}"]
    collector = subprocess.Popen(
        [muck, "collect", "--client-id", f"bench-{run}-c", "--stats", "5", *flags],
        env=env,
        stdout=collector_log,
        stderr=subprocess.STDOUT,
    )
    gateway = (
        collector
        if direct
        else subprocess.Popen(
            [muck, "gateway", "jt808", "--listen", f"127.0.0.1:{port}"]
            + (["--processes", str(gateway_processes)] if gateway_processes > 1 else []),
            env=env,
            stdout=gateway_log,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    procs: list = []
    try:
        _wait_for_port(gateway, port)
        time.sleep(2.0 + gateway_processes)  # the collector subscribes, the workers start
        gw = _GatewayProcesses(gateway.pid)
        report.rss_before_mb = gw.rss_mb()
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        replies = _Replies(queue, procs)
        go, measured = context.Event(), context.Event()
        base_ms = int(time.time() * 1000) - 2 * 3600_000
        share = [idle_phones[k::clients] for k in range(clients)]
        reporters = [report_phones[k::clients] for k in range(clients)]
        for k in range(clients):
            proc = context.Process(
                target=_client_process,
                args=(
                    _ClientPlan(
                        "127.0.0.1",
                        port,
                        f"127.0.0.{2 + k}",
                        share[k],
                        hold_s,
                        reporters[k],
                        report_s,
                        window,
                        base_ms,
                        queue,
                        rate,
                        go,
                        measured,
                    ),
                ),
                daemon=True,
            )
            proc.start()
            procs.append(proc)
        connected = replies.take("connected", clients, 600)
        report.idle_connected = sum(c[1] for c in connected)
        report.idle_seconds = max(c[2] for c in connected)
        time.sleep(1.0)  # everyone connected now; the gateway's memory with them
        report.rss_after_mb = gw.rss_mb()
        if rate > 0:
            cpu_before = gw.cpu_s()
            go.set()
            steady = replies.take("steady", clients, report_s + 120)
            report.steady_rate = 1.0 / (_slots(rate) * _TICK_S)
            report.steady_seconds = report_s
            report.steady_sent = sum(s[1] for s in steady)
            report.steady_acked = sum(s[2] for s in steady)
            report.steady_gateway_cpu_s = gw.cpu_s() - cpu_before
            measured.set()
            report.steady_latency_ms = _quantiles_ms([x for s in steady for x in s[3]])
            report.steady_stored, report.steady_store_seconds = _stored(
                conn, idle_phones, report.steady_acked
            )
        done = replies.take("acked", clients, report_s + hold_s + 600)
        report.acked = sum(d[1] for d in done)
        report.cpu["clients"] = sum(d[2] for d in done)
        report.report_terminals = report_terminals
        if report_terminals:
            report.stored, report.store_seconds = _stored(conn, report_phones, report.acked)
        if direct:
            report.cpu["gateway and collector (one process)"] = gw.cpu_s()
        else:
            report.cpu["gateway"] = gw.cpu_s()
            times = psutil.Process(collector.pid).cpu_times()
            report.cpu["collector"] = times.user + times.system
        if report.idle_connected < idle:
            report.notes.append(
                f"{idle - report.idle_connected} terminals could not connect or authenticate: "
                "the gateway's sockets are bounded by the open-files limit above, less the "
                "files it holds itself (broker, database, listening socket, libraries)"
            )
    finally:
        for proc in procs:
            proc.join(30)
        for proc in (gateway, collector):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log_file in (gateway_log, collector_log):
            log_file.close()
        report.gateway_refused = _refused_publishes(
            [Path(collector_log.name) if direct else Path(gateway_log.name)]
        )
        report.direct = direct
        with conn.cursor() as cur:
            cur.execute("DELETE FROM positions WHERE device_id = ANY(%s)", (phones,))
            cur.execute("DELETE FROM truck_state WHERE device_id = ANY(%s)", (phones,))
            cur.execute("DELETE FROM jt808_terminals WHERE phone = ANY(%s)", (phones,))
            cur.execute("DELETE FROM device_status WHERE device_id = ANY(%s)", (phones,))
            if not os.environ.get("MUCK_BENCH_DEBUG"):
                cur.execute("DELETE FROM quarantine WHERE device_id = ANY(%s)", (phones,))
        conn.commit()
        unregister_company(conn, company)
        conn.close()
    return report


def _stored(conn, phones: list[str], expected: int) -> tuple[int, float]:
    """Rows stored for the reporting terminals (waiting until the count settles), and the
    seconds from the first to the last one's `received_at`."""
    last, settled = -1, time.monotonic()
    while time.monotonic() - settled < 5.0:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM positions WHERE device_id = ANY(%s)", (phones,))
            stored = cur.fetchone()[0]
        conn.commit()
        if stored != last:
            last, settled = stored, time.monotonic()
        if os.environ.get("MUCK_BENCH_DEBUG"):
            print("stored", stored, "of", expected, flush=True)
        if stored >= expected:
            break
        time.sleep(0.5)
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*), extract(epoch FROM max(received_at) - min(received_at))
               FROM positions WHERE device_id = ANY(%s)""",
            (phones,),
        )
        count, seconds = cur.fetchone()
    conn.commit()
    return count, float(seconds or 0.0)


def _refused_publishes(logs: list[Path]) -> int | None:
    """The publishes the gateway refused at once, from the counters it prints when it stops
    ("jt808 gateway stopped: …, refused_publishes=N, …"; one line per worker process)."""
    total, found = 0, False
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if "jt808 gateway stopped:" in line:
                for item in line.split(":", 1)[1].split(","):
                    key, _, value = item.strip().partition("=")
                    if key == "refused_publishes" and value.isdigit():
                        total, found = total + int(value), True
    return total if found else None


def _quantiles_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    p50, p99, top = np.percentile(np.asarray(seconds) * 1000, [50, 99, 100])
    return {"p50": float(p50), "p99": float(p99), "max": float(top)}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
