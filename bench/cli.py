"""`muck bench ingest|alerts|webhook|geofence|rules|web`: the benchmarks behind docs/performance.md.

The `bench` group itself is defined in `muck/cli.py`, which registers these commands.
"""

from __future__ import annotations

import click

from core.clicontext import MuckContext, pass_ctx


@click.command("ingest")
@click.option(
    "-n", "--messages", type=int, default=300_000, show_default=True, help="Messages to publish."
)
@click.option("--devices", type=int, default=2000, show_default=True, help="Distinct devices.")
@click.option("--publishers", type=int, default=2, show_default=True, help="Publisher processes.")
@click.option(
    "--collectors",
    type=int,
    default=1,
    show_default=True,
    help="Collector processes (>1 uses a shared subscription).",
)
@click.option(
    "--rate", type=float, default=0, help="Target total publish rate (0: as fast as possible)."
)
@click.option("--skip-ceiling", is_flag=True, help="Skip the broker-only ceiling measurement.")
@click.option(
    "--registered",
    is_flag=True,
    help="Register the devices as trucks first, so the compliance rules run on every fix.",
)
@click.option("--no-rules", is_flag=True, help="Run the collectors with --no-rules.")
@pass_ctx
def bench_ingest(
    mctx: MuckContext,
    messages: int,
    devices: int,
    publishers: int,
    collectors: int,
    rate: float,
    skip_ceiling: bool,
    registered: bool,
    no_rules: bool,
) -> None:
    """End-to-end ingestion benchmark against MUCK_MQTT_URL and MUCK_DATABASE_URL.

    Publishes from separate processes, runs collectors, and reports stored messages/s,
    publish→commit latency p50/p99, lost and duplicated counts, and the broker's raw ceiling.
    Uses a scratch table-free run: rows are deleted afterwards.
    """
    from bench.ingest import run_ingest_bench

    report = run_ingest_bench(
        mctx.settings,
        messages=messages,
        devices=devices,
        publishers=publishers,
        collectors=collectors,
        rate=rate,
        qos=1,
        measure_ceiling=not skip_ceiling,
        registered=registered,
        rules=not no_rules,
    )
    click.echo(report)


@click.command("alerts")
@click.option(
    "-n", "--messages", type=int, default=1_950_000, show_default=True, help="Messages to publish."
)
@click.option("--devices", type=int, default=2000, show_default=True, help="Distinct devices.")
@click.option("--rate", type=float, default=10_000, show_default=True, help="Publish rate (msg/s).")
@click.option(
    "--spread",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds over which the trucks load one after another (0: all 2,000 violations in "
    "one burst, with -n 1400000).",
)
@pass_ctx
def bench_alerts(
    mctx: MuckContext, messages: int, devices: int, rate: float, spread: float
) -> None:
    """Alert latency: publish of the fix that completes a violation → a local webhook
    receiver's receipt, through a real `muck collect` (rules and dispatcher) at `--rate`.

    The devices are registered without permits, so after the rules' minimum duration every
    loaded truck raises a violation; each is alerted to the receiver. Rows are deleted after.
    With `--spread S` the trucks load one after another over S seconds, so the violations come
    at devices/S a second (a city's pace) instead of all at once; publish long enough for the
    last truck: messages >= rate x (min_duration_s 120 + S + 10).
    """
    from bench.alerts import run_alert_bench

    report, latency = run_alert_bench(
        mctx.settings, messages=messages, devices=devices, rate=rate, spread_s=spread
    )
    click.echo(report)
    click.echo(
        "webhook alerts (publish of the completing fix → receiver): "
        + ", ".join(f"{k} {v:.0f}" for k, v in latency.items())
    )


@click.command("webhook")
@click.option("--posts", type=int, default=4000, show_default=True, help="Alerts to POST.")
@click.option("--threads", type=int, default=4, show_default=True, help="Sender threads.")
def bench_webhook(posts: int, threads: int) -> None:
    """CPU per webhook POST, sender and receiver (no database, no broker)."""
    from bench.webhook import run_webhook_bench

    figures = run_webhook_bench(posts=posts, threads=threads)
    click.echo(", ".join(f"{k} {v:,.0f}" for k, v in figures.items()))


@click.command("geofence")
@click.option("--polygons", default=1800, show_default=True, help="Polygon zones to generate.")
@click.option("--routes", default=200, show_default=True, help="Route corridors to generate.")
@click.option("--fixes", default=1_000_000, show_default=True, help="Fixes per batch.")
@click.option("--repeat", default=3, show_default=True, help="Runs per figure (best is kept).")
@click.option("--seed", default=1, show_default=True, help="Random seed for zones and fixes.")
@pass_ctx
def bench_geofence(mctx, polygons, routes, fixes, repeat, seed) -> None:
    """Benchmark zone classification and route distances on synthetic zones (one core)."""
    from bench.geofence import run_benchmark
    from geofence.index import GeofenceConfig

    settings = mctx.settings
    results = run_benchmark(
        dict(settings.city),
        GeofenceConfig.from_settings(settings),
        n_polygons=polygons,
        n_routes=routes,
        n_fixes=fixes,
        repeat=repeat,
        seed=seed,
        echo=click.echo,
    )
    ok_cls = results["classify_per_s"] >= 2e6
    ok_route = results["route_distance_per_s"] >= 1e6
    click.echo(
        f"targets: classify >= 2.0 M/s {'met' if ok_cls else 'MISSED'}; "
        f"route distance >= 1.0 M/s {'met' if ok_route else 'MISSED'}"
    )


@click.command("rules")
@click.option(
    "--trucks",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Registered trucks (one fix each per round).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Rounds of fixes (10 s apart) for each measurement.",
)
@click.option(
    "--polygons",
    type=click.IntRange(min=0),
    default=1800,
    show_default=True,
    help="Synthetic polygon zones.",
)
@click.option(
    "--routes",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Synthetic route corridors of 1,000 vertices.",
)
@click.option(
    "--workload",
    type=click.Choice(["random", "city"]),
    default="random",
    show_default=True,
    help="random: trucks driving straight across a synthetic city, half of them loaded and "
    "off their route (the stress case); city: the simulator's fleet with its default "
    "misbehaviour rates (the realistic case).",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="city workload: simulated minutes timed (after 2 minutes of warm-up).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="city workload: seed.")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="city workload: measure this many times, alternating without and with the rules, "
    "and report the medians (a shared machine varies by tens of percent between runs).",
)
@pass_ctx
def bench_rules(mctx, trucks, rounds, polygons, routes, workload, minutes, seed, repeat) -> None:
    """What the compliance rules add to ingesting a batch (scratch databases, dropped after).

    Reports wall time and CPU (this process plus its PostgreSQL backend) per fix, without
    and with the rules."""
    from bench.rules import run_rules_bench

    if not mctx.settings.database_url:
        raise click.ClickException("MUCK_DATABASE_URL is not set")
    click.echo(
        run_rules_bench(
            mctx.settings,
            trucks=trucks,
            rounds=rounds,
            polygons=polygons,
            routes=routes,
            workload=workload,
            minutes=minutes,
            seed=seed,
            repeat=repeat,
        )
    )


@click.command("web")
@click.option(
    "--trucks",
    default=20000,
    show_default=True,
    type=int,
    help="Trucks seeded into the scratch database.",
)
@click.option(
    "--changed",
    default=500,
    show_default=True,
    type=int,
    help="Trucks updated before the delta request.",
)
@click.option(
    "--repeat", default=20, show_default=True, type=int, help="Timed requests of each kind."
)
@click.option(
    "--violations",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Instead of the live map: time the violations list, page and track over this many "
    "violations (e.g. 1000000).",
)
@click.option(
    "--positions",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Positions generated for the violations benchmark (e.g. 100000000: 15-20 GB).",
)
@click.option(
    "--listed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Live map: this many companies on credit lists in force (their flags in every answer).",
)
@click.option(
    "--fleet",
    default=5000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Trucks of the violations benchmark.",
)
@click.option(
    "--db-name",
    default=None,
    help="Violations benchmark: use (and keep) this database, generating only what it "
    "lacks, so that a second run skips the generation. Drop it yourself when done.",
)
@pass_ctx
def bench_web(
    mctx: MuckContext,
    trucks: int,
    changed: int,
    repeat: int,
    violations: int,
    positions: int,
    fleet: int,
    db_name: str | None,
    listed: int,
) -> None:
    """Time the live map (or with --violations the violations list) in a scratch database.

    Without --violations: /api/v1/trucks/live, full and delta, for N trucks. With it: the
    violations list (filter mixes, sorts, deep pages), one violation and the track around
    it, over N violations and M positions.

    Creates a temporary database next to MUCK_DATABASE_URL's, migrates it, generates the data
    set-based in PostgreSQL, times requests through the Flask test client, and drops it
    (unless --db-name).
    """
    if violations:
        from bench.web_violations import run_violation_bench

        click.echo(
            run_violation_bench(
                mctx.settings,
                violations=violations,
                positions=positions,
                trucks=fleet,
                repeat=repeat,
                db_name=db_name,
                say=lambda text: click.echo(text, err=True),
            )
        )
        return
    from bench.web_live import run_bench

    click.echo(
        run_bench(mctx.settings, trucks=trucks, changed=changed, repeat=repeat, listed=listed)
    )


@click.command("jt808")
@click.option(
    "--idle",
    type=int,
    default=19_900,
    show_default=True,
    help="Idle terminals to hold (one gateway process: the open-files hard limit bounds it).",
)
@click.option(
    "--clients", type=int, default=4, show_default=True, help="Client processes for the sockets."
)
@click.option(
    "--reporters",
    type=int,
    default=2000,
    show_default=True,
    help="Terminals sending location reports in the throughput part (0: skip it).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Length of the report part.",
)
@click.option(
    "--window",
    type=int,
    default=8,
    show_default=True,
    help="Unacknowledged reports per terminal at a time.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Reports/s each of the --idle terminals sends for --seconds while all stay connected "
    "(a steady fleet; 0: they stay idle).",
)
@click.option("--rules", is_flag=True, help="Run the collector with the compliance rules.")
@click.option(
    "--writer-lanes",
    type=click.IntRange(min=1),
    default=None,
    help="The collector's ingest.writer_lanes for the run (default: the settings').",
)
@click.option(
    "--gateway-processes",
    type=int,
    default=1,
    show_default=True,
    help="Run the gateway as this many processes sharing the port (--processes).",
)
@click.option(
    "--direct",
    is_flag=True,
    help="The gateway inside the collector, without the broker (`muck collect --jt808`).",
)
@pass_ctx
def bench_jt808(
    mctx: MuckContext,
    idle,
    clients,
    reporters,
    seconds,
    window,
    rate,
    rules,
    writer_lanes,
    gateway_processes,
    direct,
) -> None:
    """The JT/T 808 gateway: idle connections held by one process and memory per connection,
    then location reports per second end to end into the database (real gateway, broker and
    collector). Needs MUCK_DATABASE_URL and MUCK_MQTT_URL; run it through
    /work/tools/cpu-exclusive on a shared machine."""
    from bench.jt808 import run_jt808_bench

    click.echo(
        str(
            run_jt808_bench(
                mctx.settings,
                idle=idle,
                clients=clients,
                report_terminals=reporters,
                report_s=seconds,
                window=window,
                rules=rules,
                gateway_processes=gateway_processes,
                direct=direct,
                rate=rate,
                writer_lanes=writer_lanes,
            )
        )
    )
