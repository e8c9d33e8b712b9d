"""CPU of the processes a load test drives, found by what they serve rather than by name.

On a shared machine a name is not enough: other people's collectors and databases run too.
So the broker is the process listening on the broker URL's port; collectors are `muck
collect` processes whose MUCK_DATABASE_URL is this run's (or our own subprocesses);
PostgreSQL backends are the `pg_stat_activity` rows of this database whose application is
the collector (`muck-collect…`, one per writer lane) or its rule jobs (`muck-rules`), plus the server's
background processes (WAL writer, checkpointer, autovacuum). Whatever is not found, or is
on another machine, is said so in `notes` instead of being guessed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import psutil

LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}

# Roles, in the order reports list them.
ROLES = (
    "publisher",
    "collector",
    "mosquitto",
    "postgres backend",
    "postgres background",
    "loadtest",
)


@dataclass
class Watched:
    role: str
    pid: int
    label: str
    proc: psutil.Process
    first_cpu: float
    last_cpu: float
    first_seen: float
    last_seen: float
    note: str = ""

    @property
    def cpu_s(self) -> float:
        return max(0.0, self.last_cpu - self.first_cpu)


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, all processes)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


@dataclass
class CpuWatch:
    """Per-process CPU from the moment each process is first seen; `sample()` once a second
    also records per-role totals for the plot, and the whole machine's busy time (so the
    share taken by processes outside the test is visible)."""

    procs: dict[int, Watched] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    series: list[tuple[float, dict[str, float], float]] = field(default_factory=list)
    machine_first: float = field(default_factory=_machine_busy)
    machine_last: float = 0.0
    started: float = field(default_factory=time.time)
    ended: float = 0.0

    def add(self, role: str, pid: int, label: str, note: str = "") -> bool:
        if pid in self.procs:
            return True
        try:
            proc = psutil.Process(pid)
            cpu = _cpu(proc)
        except psutil.Error:
            return False
        now = time.time()
        self.procs[pid] = Watched(role, pid, label, proc, cpu, cpu, now, now, note)
        return True

    def restart(self) -> None:
        """Start counting from now (after set-up, before the load)."""
        now = time.time()
        for w in self.procs.values():
            try:
                w.first_cpu = w.last_cpu = _cpu(w.proc)
            except psutil.Error:
                pass
            w.first_seen = w.last_seen = now
        self.machine_first = _machine_busy()
        self.started = now
        self.series.clear()

    def sample(self) -> None:
        now = time.time()
        for w in self.procs.values():
            try:
                w.last_cpu = _cpu(w.proc)
                w.last_seen = now
            except psutil.Error:
                pass  # exited: its last sample stands
        self.machine_last = _machine_busy()
        self.ended = now
        totals: dict[str, float] = {}
        for w in self.procs.values():
            totals[w.role] = totals.get(w.role, 0.0) + w.cpu_s
        self.series.append((now, totals, self.machine_last - self.machine_first))

    def set_cpu(self, pid: int, cpu_s: float) -> None:
        """A process that measured itself (a publisher, at its exit) knows best."""
        w = self.procs.get(pid)
        if w is not None:
            w.last_cpu = w.first_cpu + cpu_s

    def by_role(self) -> dict[str, float]:
        totals = {role: 0.0 for role in ROLES if any(w.role == role for w in self.procs.values())}
        for w in self.procs.values():
            totals[w.role] = totals.get(w.role, 0.0) + w.cpu_s
        return totals

    @property
    def machine_cpu_s(self) -> float:
        return max(0.0, self.machine_last - self.machine_first)

    # -- discovery ------------------------------------------------------------------------
    def find_broker(self, host: str, port: int) -> None:
        if host not in LOCAL_HOSTS:
            self.notes.append(
                f"mosquitto: the broker at {host}:{port} is not addressed as this machine; "
                "its CPU is not measured"
            )
            return
        pid = None
        try:
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    pid = conn.pid
                    break
        except psutil.Error:
            pid = None
        if pid is None:
            self.notes.append(
                f"mosquitto: no process of this machine found listening on port {port} "
                "(another user's, or in a container): its CPU is not measured"
            )
            return
        try:
            name = psutil.Process(pid).name()
        except psutil.Error:
            name = "?"
        note = "" if name == "mosquitto" else f"the process on port {port} is {name!r}"
        self.add("mosquitto", pid, f"{name} (port {port})", note)
        if note:
            self.notes.append(f"mosquitto: {note}")

    def find_collectors(self, database_url: str, own: set[int]) -> int:
        """`muck collect` processes writing to this database; returns how many were found."""
        found = skipped = unverified = 0
        me = os.getpid()
        for proc in psutil.process_iter(["pid", "cmdline"]):
            argv = proc.info.get("cmdline") or []
            pid = proc.info["pid"]
            if pid == me or pid in self.procs or "collect" not in argv:
                continue
            runner = " ".join(argv[: argv.index("collect")])
            if pid not in own and not ("muck" in runner or "muck.cli" in runner):
                continue
            note = ""
            if pid not in own:
                try:
                    env_url = proc.environ().get("MUCK_DATABASE_URL")
                except psutil.Error:
                    env_url = None
                    note = "database not verified (environment unreadable)"
                    unverified += 1
                if env_url is not None and env_url != database_url:
                    skipped += 1
                    continue
            label = " ".join(a for a in argv[argv.index("collect") :][:4])
            if self.add("collector", pid, label, note):
                found += 1
        # A collector's alert dispatcher runs in a child process (alerts/dispatcher.py),
        # started after the collector: its CPU is the collector's too. Looked for on every
        # call, as the collectors themselves are.
        for watched in [w for w in self.procs.values() if w.role == "collector"]:
            try:
                children = watched.proc.children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                self.add("collector", child.pid, f"child of {watched.label}", watched.note)
        if skipped:
            self.notes.append(
                f"collector: ignored {skipped} `muck collect` process(es) of other databases"
            )
        return found

    def find_postgres(self, conn, database_url: str) -> None:
        """Backends of this database serving collectors and rule jobs, this run's own
        backend, and the server's background processes; called again during the run,
        because a collector opens its database connection with its first batch."""
        host = urlparse(database_url).hostname or ""
        if host not in LOCAL_HOSTS and not host.startswith("/"):
            if not any("postgres:" in n for n in self.notes):
                self.notes.append(
                    f"postgres: the server at {host} is not addressed as this machine; "
                    "its CPU is not measured"
                )
            return
        with conn.cursor() as cur:
            cur.execute(
                """SELECT pid, backend_type, application_name,
                          datname IS NOT DISTINCT FROM current_database(),
                          pid = pg_backend_pid()
                   FROM pg_stat_activity
                   WHERE datname = current_database() OR datname IS NULL"""
            )
            rows = cur.fetchall()
        conn.commit()
        for pid, backend_type, app, ours, mine in rows:
            if pid in self.procs:
                continue
            if mine:
                role, label = "loadtest", "postgres backend of this load test (its counting)"
            elif backend_type == "client backend":
                # The collector names its connections muck-collect[-lane], muck-rules-load,
                # muck-job-<job> (core/scheduling.py) and, in its dispatcher child process,
                # muck-alerts[-listen] (alerts/dispatcher.py).
                if not ours or not (app or "").startswith(
                    ("muck-collect", "muck-rules", "muck-job", "muck-alerts")
                ):
                    continue
                role, label = "postgres backend", f"backend of {app}"
            else:
                role, label = "postgres background", backend_type or "?"
            try:
                name = psutil.Process(pid).name()
            except psutil.Error:
                continue
            if not name.startswith(("postgres", "postmaster")):
                if not any(n.startswith("postgres: pid") for n in self.notes):
                    self.notes.append(
                        "postgres: pids from pg_stat_activity are not PostgreSQL processes of "
                        "this machine (a container?): its CPU is not measured"
                    )
                return
            self.add(role, pid, label)
