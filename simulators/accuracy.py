"""`muck accuracy`: the compliance rules scored against the simulator's ground truth.

A seeded city is installed, its fleet runs for some simulated hours, every message goes
through the real ingestion path in process (telemetry.ingest.Ingestor → BatchWriter, with
ComplianceEngine.after_store hooked in, and the going-dark sweep every simulated minute as
the collector runs it), and the violations stored are matched to the injected misbehaviour
per kind. See docs/accuracy.md.
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse, urlunparse

from compliance.violations import KINDS
from simulators.groundtruth import TruthEvent

CHUNK_S = 60  # simulated seconds per feeding step (and between going-dark sweeps)


@dataclass(frozen=True)
class Found:
    """A stored violation, as the matcher sees it."""

    plate: str
    kind: str
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
    """The rule's minimum duration (going dark: the silence before a truck counts as dark)."""
    if kind == "going_dark":
        return float(settings.thresholds["dark_after_s"])
    return float(settings.sections["rules"].get(kind, {}).get("min_duration_s", 0.0))


def tolerances_s(settings, interval_s: int) -> dict[str, float]:
    """Per kind: the rule's minimum duration + two reporting intervals."""
    return {kind: minimum_s(settings, kind) + 2 * interval_s for kind in KINDS}


def shortest_s(settings, interval_s: int) -> dict[str, float]:
    """Per kind: truth episodes shorter than this (the rule's minimum + one reporting
    interval, which sampling can cut off a run) are not expected to be reported."""
    return {kind: minimum_s(settings, kind) + interval_s for kind in KINDS}


def merge_truth(truth: list[TruthEvent], gap_s: float) -> list[TruthEvent]:
    """Join episodes of one truck and kind separated by less than `gap_s` (a gap the fixes
    can hardly see, e.g. a deviating truck passing within 35 m of its route for a few
    seconds). The joined episode is while dark only if all its parts were."""
    out: list[TruthEvent] = []
    last: dict[tuple[str, str], TruthEvent] = {}
    for t in sorted(truth, key=lambda e: (e.start_ms, e.device_id, e.kind)):
        key = (t.plate, t.kind)
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
    """0: counts for recall; 1: shorter than the rule's minimum; 2: while dark."""
    if t.detail.get("while_dark"):
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
    scores = {kind: KindScore(kind) for kind in KINDS}
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
        for j in by_key.get((t.plate, t.kind), ()):
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
    """Violations in the database (withdrawn ones left out: a replay took them back)."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT t.plate, v.kind, (extract(epoch FROM v.started_at) * 1000)::bigint,
                      (extract(epoch FROM v.ended_at) * 1000)::bigint
               FROM violations v JOIN trucks t ON t.id = v.truck_id
               WHERE v.status <> 'withdrawn' ORDER BY 1, 2, 3"""
        )
        rows = cur.fetchall()
    conn.commit()
    return [Found(p, k, int(s), int(e) if e is not None else None) for p, k, s, e in rows]


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
        for kind in KINDS:
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
        return (
            f"seed {self.seed}, {self.trucks} trucks, {self.simulated_s / 3600:.2f} of "
            f"{self.hours:g} simulated hours{state}; {self.fixes} messages in {self.wall_s:.0f} s"
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
) -> AccuracyResult:
    """Install `city` into `conn`'s database, run its fleet for `hours` simulated hours through
    the in-process ingestion path with the rules, and score the violations stored."""
    from compliance.engine import ComplianceEngine
    from compliance.sweep import sweep_dark
    from simulators.city import install_city
    from simulators.fleet import Fleet
    from telemetry.ingest import Incoming, Ingestor

    stop = stop or threading.Event()
    install_city(conn, settings, city)
    engine = ComplianceEngine(settings)
    engine.load(conn)
    ingestor = Ingestor(settings)
    writer = ingestor.make_writer(conn, after_store=[engine.after_store])
    batch_size = int(settings.ingest["batch_size"])
    duration = int(hours * 3600)
    # Fix times stay in the past (the collector refuses future fixes).
    start_ms = int(time.time() * 1000) - duration * 1000 - 120_000
    fleet = Fleet(city, config, start_ms=start_ms)
    fed = 0
    began = time.monotonic()

    def feed(messages) -> None:
        nonlocal fed
        incoming = [Incoming(t, p) for t, p in messages]
        for i in range(0, len(incoming), batch_size):
            with conn.cursor() as cur:
                batch = ingestor.build(incoming[i : i + batch_size], cur)
            writer.write(batch)
        fed += len(incoming)

    last_status = 0.0
    while fleet.t < duration and not stop.is_set():
        target = min(duration, fleet.t + CHUNK_S)
        if speedup > 0:
            wait = (target / speedup) - (time.monotonic() - began)
            if wait > 0 and stop.wait(wait):
                break
        feed(fleet.advance(target))
        sweep_dark(conn, settings, dt.datetime.fromtimestamp(fleet.ms(fleet.t) / 1000, dt.UTC))
        if status is not None and time.monotonic() - last_status >= 1.0:
            status(fleet, fed, duration)
            last_status = time.monotonic()
    fleet.annotate_truth()
    feed(fleet.finish())
    end_ms = fleet.ms(fleet.t)
    sweep_dark(conn, settings, dt.datetime.fromtimestamp(end_ms / 1000, dt.UTC))
    if status is not None:
        status(fleet, fed, duration)
    scores = match(
        merge_truth(fleet.truth, config.interval_s),
        stored_violations(conn),
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
    )


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
