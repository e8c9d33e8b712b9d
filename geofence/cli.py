"""`muck zones ...`."""

from __future__ import annotations

import datetime as dt
import json
import sys

import click

from core.clicontext import pass_ctx


@click.group()
def zones() -> None:
    """Import, export and inspect geofence zones."""


def _city_limits(settings) -> dict:
    """Where imported geometry may lie: near the city centre (geofence.max_zone_distance_km)."""
    return {
        "center": (float(settings.city["center_lon"]), float(settings.city["center_lat"])),
        "max_distance_km": float(settings["geofence"]["max_zone_distance_km"]),
    }


def _summary(kinds) -> str:
    """`2 route, 3 site`: how many of each kind or class."""
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


# The coordinate system of a file to import (both import commands).
_import_crs = click.option(
    "--crs",
    type=click.Choice(["wgs84", "gcj02", "bd09"]),
    default="wgs84",
    show_default=True,
    help="Coordinate system the file was drawn in: gcj02 for AMap/Tencent, bd09 for Baidu. "
    "Converted to WGS-84 before storing.",
)


@zones.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@_import_crs
@click.option(
    "--kind",
    type=click.Choice(["site", "disposal", "route", "restricted", "speed"]),
    help="Kind for features that do not name one (GPX files default to route).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["geojson", "gpx", "kml"]),
    help="File format; by default from the extension (.geojson/.json, .gpx, .kml).",
)
@click.option(
    "--width-m",
    type=click.FloatRange(min=0, min_open=True),
    help="Corridor width (m from the centre line) for routes that do not set width_m.",
)
@click.option("--code", help="Zone code, for a file holding a single feature without one.")
@click.option("--dry-run", is_flag=True, help="Validate and report, store nothing.")
@pass_ctx
def import_cmd(mctx, file, crs, kind, fmt, width_m, code, dry_run) -> None:
    """Import zones from FILE (GeoJSON, GPX or KML), upserting by zone code.

    The whole file is validated first and stored in one transaction: a bad feature rejects
    the file, with every problem listed by feature index and code.
    """
    from geofence.io import ZoneImportError, read_zones_file
    from geofence.store import upsert_zones

    settings = mctx.settings
    defaults = {"width_m": width_m} if width_m else {}
    try:
        found = read_zones_file(
            file,
            fmt=fmt,
            crs=crs,
            default_kind=kind,
            defaults=defaults,
            code=code,
            **_city_limits(settings),
        )
    except ZoneImportError as exc:
        click.echo(f"error: {exc}", err=True)
        if any("km from the city centre" in e for e in exc.errors):
            _offer_city_init(mctx, file, fmt, crs, kind, defaults, code)
        sys.exit(1)
    summary = _summary(zone.kind for zone in found)
    if dry_run:
        click.echo(f"{file}: {len(found)} valid zones ({summary}); nothing stored (--dry-run)")
        return
    conn = mctx.connect()
    try:
        counts = upsert_zones(conn, found)
    except Exception as exc:
        click.echo(f"error: {file}: nothing imported: {exc}", err=True)
        sys.exit(1)
    finally:
        conn.close()
    click.echo(f"{file}: {counts['inserted']} inserted, {counts['updated']} updated ({summary})")


def _first_import(mctx) -> bool:
    """No zone stored yet (or no database to ask): a new city, not a typo in one zone."""
    try:
        conn = mctx.connect()
    except click.ClickException:
        return True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT NOT EXISTS (SELECT 1 FROM geofence_zones)")
            return cur.fetchone()[0]
    except Exception:
        return True
    finally:
        conn.close()


def _offer_city_init(mctx, file, fmt, crs, kind, defaults, code) -> None:
    """On the first import of a city whose zones lie far from the configured centre, say
    which centre this file implies and the command that sets it."""
    from geofence.city import propose_city
    from geofence.io import ZoneImportError, read_zones_file

    if not _first_import(mctx):
        return
    try:
        found = read_zones_file(
            file, fmt=fmt, crs=crs, default_kind=kind, defaults=defaults, code=code
        )
        proposal = propose_city(found)
    except (ZoneImportError, ValueError):
        return
    target = mctx.config_path or "city.toml"
    click.echo(
        f"This is the first zone import, and its zones centre on ({proposal.center_lon}, "
        f"{proposal.center_lat}), not on the configured centre. If this is your city, run\n"
        f"  muck city init --from-zones {file} --write {target}\n"
        f"then import again with MUCK_CONFIG={target} (or muck --config {target}).",
        err=True,
    )


@click.group()
def city() -> None:
    """Set a new city up: its centre and metric projection."""


@city.command("init")
@click.option(
    "--from-zones",
    "zones_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The city's zones (GeoJSON, GPX or KML): the centre and projection are proposed from them.",
)
@_import_crs
@click.option("--format", "fmt", type=click.Choice(["geojson", "gpx", "kml"]), help="File format.")
@click.option(
    "--write",
    "target",
    type=click.Path(dir_okay=False),
    help="City settings file to write city.center_lon, center_lat and projection into (created "
    "or updated in place). Default: the --config / MUCK_CONFIG file; without either, only print.",
)
@pass_ctx
def city_init_cmd(mctx, zones_file, crs, fmt, target) -> None:
    """Propose the city centre (the middle of the zones) and metric projection (the CGCS2000
    3-degree Gauss-Krüger zone of that centre) from ZONES, and write them into the city
    settings file."""
    from core.config import ConfigError, load_settings, write_city_settings
    from geofence.city import propose_city
    from geofence.io import ZoneImportError, read_zones_file

    try:
        found = read_zones_file(
            zones_file, fmt=fmt, crs=crs, default_kind="route" if fmt == "gpx" else None
        )
        proposal = propose_city(found)
    except ZoneImportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except ValueError as exc:
        click.echo(f"error: {zones_file}: {exc}", err=True)
        sys.exit(1)
    limit = float(load_settings()["geofence"]["max_zone_distance_km"])
    click.echo(
        f"{zones_file}: {len(found)} zones; proposed city.center_lon = {proposal.center_lon}, "
        f"city.center_lat = {proposal.center_lat}, city.projection = {proposal.projection!r} "
        f"({proposal.projection_name}); the farthest zone is {proposal.farthest_km:g} km away"
    )
    if proposal.farthest_km > limit:
        click.echo(
            f"error: the zones span more than geofence.max_zone_distance_km = {limit:g} km from "
            "any centre: is this one city? Raise that setting only if it is.",
            err=True,
        )
        sys.exit(1)
    target = target or mctx.config_path
    if not target:
        click.echo("not written: give --write city.toml (or muck --config FILE)")
        return
    try:
        write_city_settings(target, proposal.settings())
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"written to {target}; use it with MUCK_CONFIG={target} or muck --config {target}")


@zones.command("import-basemap")
@click.argument("file", type=click.Path(dir_okay=False))
@_import_crs
@click.option(
    "--source",
    help="Name of this layer; an import replaces the features of the same source "
    "(default: the file's name).",
)
@click.option("--dry-run", is_flag=True, help="Validate and report, store nothing.")
@pass_ctx
def import_basemap_cmd(mctx, file, crs, source, dry_run) -> None:
    """Import the offline base layer (streets, water, green areas) from a GeoJSON FILE.

    Each feature has a `class` (expressway, urban_expressway, arterial, other, path, rail,
    river: lines; water, green, built_up: polygons) and optionally a `name`; other properties
    are ignored. The whole file is validated first: a bad feature rejects the file, with every
    problem listed by feature index. The features replace those of the same --source.
    """
    from pathlib import Path

    from geofence.basemap import read_basemap_file, replace_basemap
    from geofence.io import ZoneImportError

    settings = mctx.settings
    try:
        found = read_basemap_file(file, crs=crs, **_city_limits(settings))
    except ZoneImportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    summary = _summary(feature.cls for feature in found)
    if dry_run:
        click.echo(f"{file}: {len(found)} valid features ({summary}); nothing stored (--dry-run)")
        return
    source = source or Path(file).name
    conn = mctx.connect()
    try:
        counts = replace_basemap(conn, found, source)
    finally:
        conn.close()
    click.echo(
        f"{file}: base layer {source!r}: {counts['inserted']} features ({summary}), "
        f"{counts['deleted']} replaced"
    )


@zones.command("export")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the GeoJSON here instead of standard output.",
)
@click.option(
    "--crs",
    type=click.Choice(["wgs84", "gcj02", "bd09"]),
    default="wgs84",
    show_default=True,
    help="Coordinate system to write (gcj02/bd09 for drawing on AMap/Baidu).",
)
@click.option("--kind", help="Only zones of this kind.")
@click.option("--district", help="Only zones of this district (行政区).")
@pass_ctx
def export_cmd(mctx, output, crs, kind, district) -> None:
    """Export zones as a GeoJSON FeatureCollection (the import schema)."""
    from geofence.io import export_geojson
    from geofence.store import load_zones

    conn = mctx.connect()
    try:
        found = load_zones(conn, kind=kind, district=district)
    finally:
        conn.close()
    text = json.dumps(export_geojson(found, crs), ensure_ascii=False, indent=1)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        click.echo(f"wrote {len(found)} zones to {output}", err=True)
    else:
        click.echo(text)


@zones.command("list")
@click.option("--kind", help="Only zones of this kind.")
@click.option("--district", help="Only zones of this district (行政区).")
@pass_ctx
def list_cmd(mctx, kind, district) -> None:
    """List zones: code, kind, name, district, validity, active, vertices."""
    import shapely

    from geofence.store import load_zones

    conn = mctx.connect()
    try:
        found = load_zones(conn, kind=kind, district=district)
    finally:
        conn.close()
    for zone in found:
        geom = shapely.geometry.shape(zone.geometry)
        valid = f"{zone.valid_from or '-'}..{zone.valid_to or '-'}"
        extra = ""
        if zone.kind == "route":
            extra = f" width={zone.width_m:g}m"
        elif zone.kind == "speed":
            extra = f" limit={zone.attributes.get('speed_limit_kmh'):g}km/h"
        click.echo(
            f"{zone.code}\t{zone.kind}\t{zone.name}\t{zone.district or '-'}\t{valid}\t"
            f"{'active' if zone.active else 'inactive'}\t{shapely.get_num_coordinates(geom)} pts"
            f"{extra}"
        )
    click.echo(f"{len(found)} zones", err=True)


@zones.command("ban-day")
@click.argument("day", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD")
@click.option("--zone", "zone_code", help="Restricted zone code; all restricted zones if omitted.")
@click.option("--start", help="Start of the ban (HH:MM local); the whole day if omitted.")
@click.option("--end", help="End of the ban (HH:MM local; not after start = past midnight).")
@click.option("--reason", default="", help="Why (holiday, exam day, ...).")
@pass_ctx
def ban_day_cmd(mctx, day, zone_code, start, end, reason) -> None:
    """Add an extra ban DAY (YYYY-MM-DD, local) for restricted zones."""
    from geofence.store import add_ban_day
    from geofence.timewin import WindowError, parse_hhmm

    def _time(text):
        if text is None:
            return None
        try:
            minutes = parse_hhmm(text, allow_24=False)
        except WindowError as exc:
            raise click.BadParameter(str(exc)) from None
        return dt.time(minutes // 60, minutes % 60)

    conn = mctx.connect()
    try:
        ban_id = add_ban_day(
            conn,
            day.date(),
            zone_code=zone_code,
            start=_time(start),
            end=_time(end),
            reason=reason,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    click.echo(f"ban day {ban_id} added for {day.date()} ({zone_code or 'all restricted zones'})")
