"""The report folder of `muck loadtest`: report.md plus PNG plots (matplotlib, Agg backend:
no display needed on a server)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from simulators.loadtest import LoadtestResult

PLOTS = ("rates.png", "latency.png", "cpu.png")


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "–"


def _n(x: float) -> str:
    return f"{x:,.0f}"


def summary_rows(r: LoadtestResult) -> list[tuple[str, str]]:
    o = r.options
    rows = [
        ("target", f"{_n(o.rate)} msg/s for {o.duration_s:g} s"),
        (
            "published",
            f"{_n(r.sent)} messages in {r.publish_seconds:.1f} s: **{_n(r.publish_rate)}/s** "
            f"({_n(r.unique)} distinct + {_n(r.duplicates_sent)} duplicates; "
            f"{o.publishers} publisher processes, {o.trucks} trucks; the last message was "
            f"written at {r.write_seconds:.1f} s and acknowledged by the broker "
            f"{max(0.0, r.publish_seconds - r.write_seconds):.1f} s later)",
        ),
        (
            "stored",
            f"{_n(r.stored)} in {r.store_seconds:.1f} s from the first publish: "
            f"**{_n(r.stored_rate)}/s**",
        ),
    ]
    behind = f"{_n(r.backlog_at_publish_end)} messages not yet stored when publishing ended; "
    waited = {
        "quiet": f"nothing new was stored for {r.options.quiet_s:g} s, the run stopped waiting",
        "timeout": f"the collectors were still storing when the run stopped waiting "
        f"(--drain {r.options.drain_s:g} s)",
        "aborted": "the wait was cut short (Ctrl-C)",
    }
    behind += (
        f"all stored {r.catch_up_s:.1f} s later"
        if r.catch_up_s is not None
        else waited.get(r.drain_end, "the collectors had not caught up")
    )
    rows.append(("backlog", behind))
    lost = f"**{_n(r.lost)}**"
    if r.lost and r.drain_end in ("timeout", "aborted"):
        lost += " not stored when the run stopped waiting (still queued at the broker, or lost)"
    if r.voided:
        lost += f" ({_n(r.voided)} published on purpose to a topic nobody stores, --lose-pct)"
    if r.lost_examples:
        lost += "; first missing: " + ", ".join(f"{d} seq {s}" for d, s in r.lost_examples[:6])
    rows.append(("lost", lost))
    counted = (
        f"counted as duplicates by the collectors this run started: {_n(r.collector_duplicates)}"
        if r.collector_duplicates is not None
        else "the collectors' own count is in their `muck_ingest_duplicates` metric"
    )
    rows.append(
        (
            "duplicates",
            f"{_n(r.duplicates_sent)} messages published twice: {_n(r.duplicates_once)} stored "
            f"once, {_n(r.duplicates_more)} more than once, {_n(r.duplicates_missing)} not at "
            f"all; rows stored twice overall: {_n(r.stored_twice)}; {counted}",
        )
    )
    quarantined = ", ".join(f"{k} {_n(v)}" for k, v in r.quarantined.items()) or "none"
    rows.append(("quarantined", quarantined))
    if r.latency_ms:
        lat = r.latency_ms
        rows.append(
            (
                "latency publish → stored",
                f"p50 {_n(lat['p50'])} ms, p95 {_n(lat['p95'])} ms, **p99 {_n(lat['p99'])} ms**, "
                f"max {_n(lat['max'])} ms",
            )
        )
    else:
        rows.append(("latency publish → stored", "none: nothing was stored"))
    rows.append(
        (
            "broker ceiling",
            f"{_n(r.ceiling_rate)} msg/s ({_n(o.ceiling_messages)} messages from "
            f"{o.publishers} unpaced publishers to a subscriber that only acknowledges, same "
            "broker, just before the load)"
            if r.ceiling_rate is not None
            else "not measured (--ceiling-messages 0)",
        )
    )
    devices = (
        "registered as trucks of a scratch company (rules run)"
        if o.registered
        else ("unregistered (stored with truck_id NULL; rules skip them)")
    )
    rows.append(("devices", f"LT-{r.run}-nnnnn, {devices}"))
    rows.append(
        (
            "collectors",
            f"{o.collectors} started by this command" + ("" if o.rules else " with --no-rules")
            if o.collectors
            else "the platform's own (already running)",
        )
    )
    if r.collector_events:
        rows.append(
            ("collector killed", "; ".join(f"{t:.0f} s: {what}" for t, what in r.collector_events))
        )
    if r.comparison is not None:
        rows += comparison_rows(r)
    return rows


def comparison_rows(r: LoadtestResult) -> list[tuple[str, str]]:
    c = r.comparison
    assert c is not None
    rows = [
        (
            "rows vs reference",
            f"**{'the same' if c.same_rows else 'DIFFERENT'}**: {_n(c.main.rows)} here, "
            f"{_n(c.reference.rows)} stored by the reference collector (digest of device, fix "
            "time, position, speed, heading, sensors, seq)",
        ),
        (
            "violations vs reference",
            f"**{'the same' if c.same_violations else 'DIFFERENT'}**: {_n(len(c.main.standing))} "
            f"standing here, {_n(len(c.reference.standing))} in the reference; withdrawn by a "
            f"late-fix replay: {_n(c.main.withdrawn)} here, {_n(c.reference.withdrawn)} there",
        ),
    ]
    for name, keys in (
        ("only here", c.violations_only_main),
        ("only in the reference", c.violations_only_reference),
    ):
        if keys:
            rows.append((f"violations {name}", "; ".join(k.label() for k in keys[:5])))
    for name, sample in (
        ("rows only here", c.rows_only_main),
        ("rows only in the reference", c.rows_only_reference),
    ):
        if sample:
            rows.append((name, "; ".join(sample)))
    return rows


def cpu_rows(r: LoadtestResult) -> list[tuple[str, ...]]:
    window = max(r.cpu_window_s, 1e-9)
    stored = max(r.stored, 1)
    rows = []
    for p in r.processes:
        rows.append(
            (
                p.role,
                str(p.pid),
                p.label + (f" ({p.note})" if p.note else ""),
                f"{p.cpu_s:.1f}",
                f"{p.cpu_s / window:.2f}",
                f"{p.cpu_s / stored * 1e6:.1f}",
            )
        )
    by_role = r.cpu_by_role()
    for role, cpu in by_role.items():
        rows.append(
            (
                f"**all {role}**",
                "",
                "",
                f"{cpu:.1f}",
                f"{cpu / window:.2f}",
                f"{cpu / stored * 1e6:.1f}",
            )
        )
    measured = sum(by_role.values())
    rows.append(
        (
            "**measured, total**",
            "",
            "",
            f"{measured:.1f}",
            f"{measured / window:.2f}",
            f"{measured / stored * 1e6:.1f}",
        )
    )
    rows.append(
        (
            "**whole machine**",
            "",
            f"{r.machine.get('cores', '?')} cores",
            f"{r.machine_cpu_s:.1f}",
            f"{r.machine_cpu_s / window:.2f}",
            "",
        )
    )
    other = max(0.0, r.machine_cpu_s - measured)
    rows.append(
        (
            "**other processes**",
            "",
            "everything on the machine not listed above (other users' work, the kernel)",
            f"{other:.1f}",
            f"{other / window:.2f}",
            "",
        )
    )
    return rows


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(r: LoadtestResult, plots: list[str]) -> str:
    ok, _ = r.verdict()
    parts = [
        f"# Load test {r.run}: {'PASS' if ok else 'FAIL'}",
        "",
        f"**{r.verdict_line()}**",
        "",
        "```sh",
        r.command or "muck loadtest",
        "```",
        "",
        f"From {_when(r.started)} to {_when(r.ended)}; broker {r.broker}, database "
        f"`{r.database}`. Load average (1, 5, 15 min) at the start "
        f"{r.machine.get('load average at start', '?')}, at the end "
        f"{r.machine.get('load average at end', '?')}.",
        "",
        "## Figures",
        "",
        _table(("", ""), summary_rows(r)),
        "",
        "## CPU per process",
        "",
        f"From the first publish until the collectors caught up ({r.cpu_window_s:.1f} s). "
        "Cores = CPU seconds / wall seconds; µs per stored message = CPU / messages stored.",
        "",
        _table(("process", "pid", "what", "CPU s", "cores", "µs / msg"), cpu_rows(r)),
        "",
    ]
    if r.notes:
        parts += ["Not measured or worth knowing:", ""]
        parts += [f"* {note}" for note in r.notes]
        parts.append("")
    parts += ["## Machine", "", _table(("", ""), list(r.machine.items())), ""]
    if plots:
        parts += ["## Over time", ""]
        parts += [f"![{Path(p).stem}]({p})" for p in plots]
        parts.append("")
    return "\n".join(parts)


def write_plots(r: LoadtestResult, folder: Path) -> list[str]:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font cache chatter
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(range(len(r.publish_per_s)), r.publish_per_s, label="published / s", lw=1.2)
    ax.plot(range(len(r.stored_per_s)), r.stored_per_s, label="stored / s", lw=1.2)
    ax.axhline(r.options.rate, color="grey", ls="--", lw=0.8, label="target")
    ax.set_xlabel("seconds since the first publish")
    ax.set_ylabel("messages per second")
    ax.set_title(f"Load test {r.run}: publish and stored rate")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "rates.png", dpi=100)
    plt.close(fig)
    written.append("rates.png")

    fig, ax = plt.subplots(figsize=(9, 4.5))
    if r.latency_per_s:
        s = [row[0] for row in r.latency_per_s]
        ax.plot(s, [row[1] for row in r.latency_per_s], label="p50", lw=1.2)
        ax.plot(s, [row[2] for row in r.latency_per_s], label="p99", lw=1.2)
        ax.plot(s, [row[3] for row in r.latency_per_s], label="max", lw=0.8, alpha=0.6)
        ax.legend()
    else:
        ax.text(0.5, 0.5, "nothing stored", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("second of publish")
    ax.set_ylabel("publish → stored latency (ms)")
    ax.set_title(f"Load test {r.run}: latency of the messages published in each second")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "latency.png", dpi=100)
    plt.close(fig)
    written.append("latency.png")

    fig, ax = plt.subplots(figsize=(9, 4.5))
    series = r.cpu_series
    if len(series) > 1:
        t0 = r.started
        roles = sorted({role for _, totals, _ in series for role in totals})
        for role in roles + ["whole machine"]:
            xs, ys = [], []
            for (ta, a, ma), (tb, b, mb) in zip(series, series[1:], strict=False):
                if tb <= ta:
                    continue
                if role == "whole machine":
                    used = mb - ma
                else:
                    used = b.get(role, 0.0) - a.get(role, 0.0)
                xs.append(tb - t0)
                ys.append(max(0.0, used) / (tb - ta))
            ax.plot(xs, ys, label=role, lw=1.8 if role == "whole machine" else 1.0)
        ax.legend(fontsize="small")
    ax.set_xlabel("seconds since the first publish")
    ax.set_ylabel("cores busy")
    ax.set_title(f"Load test {r.run}: CPU by process role")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "cpu.png", dpi=100)
    plt.close(fig)
    written.append("cpu.png")
    return written


def write_report(r: LoadtestResult, folder: str | Path) -> Path:
    """Write report.md and the plots into `folder` (created); returns report.md's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = write_plots(r, folder)
    path = folder / "report.md"
    path.write_text(markdown(r, plots), encoding="utf-8")
    return path
