"""The live map's data: every truck's latest state, or only what changed since a cursor.

The cursor is the newest `updated_at` (of truck_state, trucks or violations) the client has
seen, in epoch microseconds. `violation` is true while the truck has an open violation (not
dismissed or withdrawn). A delta re-reads `web.live_overlap_s` before the cursor, so a row whose
transaction started before the previous read but committed after it is not missed; the
client applies rows idempotently (each row is the truck's whole state).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import msgspec
import numpy as np

from geofence.coords import from_wgs84, normalise_crs
from web.queries import LAST_FIX_FIELDS

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ENCODER = msgspec.json.Encoder()
FIELDS = (
    "id",
    "plate",
    "company_id",
    "active",
    *LAST_FIX_FIELDS,
    "fix_ms",
    "alarms",
    "violation",
)

# Trucks with an open violation (episode still going, not dismissed or withdrawn): a scan of
# the partial index violations_open_idx, i.e. of the open violations only.
_OPEN = """
    LEFT JOIN (SELECT DISTINCT truck_id FROM violations
               WHERE ended_at IS NULL AND status NOT IN ('dismissed', 'withdrawn')) ov
           ON ov.truck_id = s.truck_id
"""
# Trucks that changed since the cursor: state, registry row, or one of their violations.
_CHANGED = (
    " WHERE s.truck_id IN (SELECT truck_id FROM truck_state WHERE updated_at > %(since)s"
    " UNION SELECT id FROM trucks WHERE updated_at > %(since)s"
    " UNION SELECT truck_id FROM violations WHERE updated_at > %(since)s)"
)

_SELECT_BASE = """
    SELECT s.truck_id, t.plate, t.company_id, t.active, s.lon, s.lat, s.speed_kmh, s.heading,
           s.load::text, s.lid::text, s.lift::text, s.acc,
           (extract(epoch FROM s.fix_time) * 1000)::bigint, s.alarms,
           ov.truck_id IS NOT NULL, greatest(s.updated_at, t.updated_at)
    FROM truck_state s JOIN trucks t ON t.id = s.truck_id
"""
_SELECT = _SELECT_BASE + _OPEN  # noqa: S608 (constant fragments only)
_FULL = _SELECT + " WHERE t.active"
_DELTA = _SELECT + _CHANGED


# The same rows aggregated into column arrays by PostgreSQL: one text value instead of
# 20,000 Python tuples (the WGS-84 fast path; other CRSs convert in numpy).
_AGG_BASE = """
    SELECT count(*), max(greatest(s.updated_at, t.updated_at)),
           json_build_object(
             'id', coalesce(json_agg(s.truck_id), '[]'), 'plate', coalesce(json_agg(t.plate), '[]'),
             'company_id', coalesce(json_agg(t.company_id), '[]'), 'active', coalesce(json_agg(t.active), '[]'),
             'lon', coalesce(json_agg(s.lon), '[]'), 'lat', coalesce(json_agg(s.lat), '[]'),
             'speed', coalesce(json_agg(s.speed_kmh), '[]'), 'heading', coalesce(json_agg(s.heading), '[]'),
             'load', coalesce(json_agg(s.load), '[]'), 'lid', coalesce(json_agg(s.lid), '[]'),
             'lift', coalesce(json_agg(s.lift), '[]'), 'acc', coalesce(json_agg(s.acc), '[]'),
             'fix_ms', coalesce(json_agg((extract(epoch FROM s.fix_time) * 1000)::bigint), '[]'),
             'alarms', coalesce(json_agg(s.alarms), '[]'),
             'violation', coalesce(json_agg(ov.truck_id IS NOT NULL), '[]'))::text,
           array_agg(DISTINCT t.company_id) FILTER (WHERE t.company_id IS NOT NULL)
    FROM truck_state s JOIN trucks t ON t.id = s.truck_id
"""
_AGG = _AGG_BASE + _OPEN  # noqa: S608 (constant fragments only)
_AGG_FULL = _AGG + " WHERE t.active"
_AGG_DELTA = _AGG + _CHANGED


def live_trucks_json(conn, since: int | None, *, overlap_s: float) -> bytes:
    """`live_trucks` for WGS-84 as ready JSON bytes, built by PostgreSQL (same document)."""
    import json

    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        server_now = cur.fetchone()[0]
        if since is None:
            cur.execute(_AGG_FULL)
        else:
            start = cursor_to_time(since) - dt.timedelta(seconds=overlap_s)
            cur.execute(_AGG_DELTA, {"since": start})
        count, top, columns, company_ids = cur.fetchone()
        top = _with_violations(cur, top)
        listed = _listed(cur)
        companies = {}
        if company_ids:
            cur.execute("SELECT id, name FROM companies WHERE id = ANY(%s)", (company_ids,))
            companies = {str(cid): name for cid, name in cur.fetchall()}
    conn.rollback()
    newest = cursor_to_time(since) if since is not None else None
    if top is not None and (newest is None or top > newest):
        newest = top
    if newest is None:
        newest = server_now
    head = {
        "full": since is None,
        "cursor": str(time_to_cursor(newest)),
        "server_ms": int(server_now.timestamp() * 1000),
        "count": count,
        "crs": "wgs84",
        "fields": list(FIELDS),
        "companies": companies,
        "listed": listed,
    }
    text = json.dumps(head, ensure_ascii=False)
    return (text[:-1] + ', "trucks": ' + columns + "}").encode()


def _listed(cur) -> dict[str, dict[str, str]]:
    """Credit's lists in force over companies and trucks (credit/lists.py): a few rows,
    sent whole with every answer so the map drops a flag the moment an entry ends."""
    from credit.lists import flagged

    flags = flagged(cur)
    return {kind: {str(k): v for k, v in ids.items()} for kind, ids in flags.items()}


def _with_violations(cur, top: dt.datetime | None) -> dt.datetime | None:
    """The cursor also covers violation changes (their updated_at, indexed), so a truck
    whose violation changed is sent once, not on every poll."""
    cur.execute("SELECT max(updated_at) FROM violations")
    vtop = cur.fetchone()[0]
    if vtop is not None and (top is None or vtop > top):
        return vtop
    return top


def cursor_to_time(cursor: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=cursor)


def time_to_cursor(value: dt.datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def live_trucks(conn, since: int | None, *, overlap_s: float, crs: str = "wgs84") -> dict[str, Any]:
    """Column-oriented snapshot (`since` None) or delta, with the next cursor."""
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        server_now = cur.fetchone()[0]
        if since is None:
            cur.execute(_FULL)
        else:
            start = cursor_to_time(since) - dt.timedelta(seconds=overlap_s)
            cur.execute(_DELTA, {"since": start})
        rows = cur.fetchall()
        violations_top = _with_violations(cur, None)
        listed = _listed(cur)
        company_ids = sorted({r[2] for r in rows if r[2] is not None})
        companies = {}
        if company_ids:
            cur.execute("SELECT id, name FROM companies WHERE id = ANY(%s)", (company_ids,))
            companies = {str(cid): name for cid, name in cur.fetchall()}
    conn.rollback()
    columns: dict[str, list] = {name: [] for name in FIELDS}
    newest = cursor_to_time(since) if since is not None else None
    if rows:
        cols = list(zip(*rows, strict=True))
        for name, values in zip(FIELDS, cols[: len(FIELDS)], strict=True):
            columns[name] = list(values)
        top = max(cols[-1])
        newest = top if newest is None or top > newest else newest
        if normalise_crs(crs) != "wgs84":
            lon, lat = from_wgs84(np.asarray(columns["lon"]), np.asarray(columns["lat"]), crs)
            columns["lon"], columns["lat"] = lon.round(7).tolist(), lat.round(7).tolist()
    if violations_top is not None and (newest is None or violations_top > newest):
        newest = violations_top
    if newest is None:
        newest = server_now
    return {
        "full": since is None,
        "cursor": str(time_to_cursor(newest)),
        "server_ms": int(server_now.timestamp() * 1000),
        "count": len(rows),
        "crs": normalise_crs(crs),
        "fields": list(FIELDS),
        "trucks": columns,
        "companies": companies,
        "listed": listed,
    }


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


# ---- full snapshots from memory ------------------------------------------------------------

_CACHE_ROWS = _SELECT  # every truck with a state, active or not (inactive ones are not sent)
_CACHE_DELTA = _SELECT + _CHANGED


class LiveCache:
    """Full snapshots served from memory, kept current with the delta query.

    A full snapshot of 20,000 trucks costs ~80 ms of SQL; the delta since the previous
    snapshot costs a few. So each process keeps the active trucks as columns, and before
    answering a full request it reads the delta since its own cursor (with the same overlap
    as the clients' deltas) and applies it. Each column is kept encoded as JSON until one of
    its values changes, and display coordinates per CRS are converted only for the trucks
    that moved, so a snapshot re-encodes only what changed and GCJ-02 costs no more than
    WGS-84. What a delta cannot see is caught as well: a deleted truck_state row (the row
    count differs), and anything else by rebuilding from the full query every `rebuild_s`.
    """

    def __init__(self, rebuild_s: float = 60.0) -> None:
        self.rebuild_s = rebuild_s
        self._lock = threading.Lock()
        self._built = float("-inf")
        self._reset()
        self.rebuilds = 0  # how often the full query ran (tests, benchmark)

    def _reset(self) -> None:
        self._pos: dict[int, int] = {}  # truck id -> index in the columns (active trucks)
        self._cols: dict[str, list] = {name: [] for name in FIELDS}
        self._updated: list[dt.datetime] = []  # per active truck
        self._inactive: set[int] = set()  # trucks with a state row that are not on the map
        self._top: dt.datetime | None = None  # newest change seen, active or not
        self._active_top: dt.datetime | None = None
        self._display: dict[str, tuple[list, list]] = {}  # crs -> converted lon, lat
        self._stale: dict[str, set[int]] = {}  # crs -> indices to convert again
        self._fragments: dict[tuple[str, str], bytes] = {}  # (crs or "", field) -> JSON

    def _mark(self, i: int) -> None:
        for stale in self._stale.values():
            stale.add(i)

    def _remove(self, i: int) -> None:
        """Swap the last active truck into slot i."""
        last = len(self._updated) - 1
        del self._pos[self._cols["id"][i]]
        columns = [*self._cols.values(), self._updated]
        columns += [c for pair in self._display.values() for c in pair]
        for column in columns:
            column[i] = column[last]
            column.pop()
        for stale in self._stale.values():
            moved_stale = last in stale
            stale.discard(last)
            stale.discard(i)
            if moved_stale and i != last:
                stale.add(i)
        if i != last:
            self._pos[self._cols["id"][i]] = i

    def _append(self, row: tuple) -> None:
        i = len(self._updated)
        self._pos[row[0]] = i
        for name, value in zip(FIELDS, row, strict=False):
            self._cols[name].append(value)
        self._updated.append(row[-1])
        for lon, lat in self._display.values():
            lon.append(None)
            lat.append(None)
        self._mark(i)

    def _apply(self, rows: list[tuple]) -> None:
        changed: set[str] = set()
        for row in rows:
            tid = row[0]
            if self._top is None or row[-1] > self._top:
                self._top = row[-1]
            i = self._pos.get(tid)
            if not row[3]:  # inactive: not on the map
                self._inactive.add(tid)
                if i is not None:
                    self._remove(i)
                    changed.update(FIELDS)
                continue
            self._inactive.discard(tid)
            if i is None:
                self._append(row)
                changed.update(FIELDS)
                continue
            self._updated[i] = row[-1]
            for name, value in zip(FIELDS, row, strict=False):
                column = self._cols[name]
                if column[i] != value:
                    column[i] = value
                    changed.add(name)
                    if name in ("lon", "lat"):
                        self._mark(i)
        if changed:
            self._active_top = max(self._updated, default=None)
            if changed & {"lon", "lat"}:
                changed |= {"lon", "lat"}  # a converted lon depends on the lat too
            for key in [k for k in self._fragments if k[1] in changed]:
                del self._fragments[key]

    def _refresh(self, cur, overlap_s: float) -> None:
        cur.execute("SELECT count(*) FROM truck_state")
        state_rows = cur.fetchone()[0]
        seen = len(self._pos) + len(self._inactive)
        stale = time.monotonic() - self._built > self.rebuild_s
        if stale or self._top is None or state_rows != seen:
            cur.execute(_CACHE_ROWS)
            rows = cur.fetchall()
            self._reset()
            self._apply(rows)
            self._built = time.monotonic()
            self.rebuilds += 1
            return
        cur.execute(_CACHE_DELTA, {"since": self._top - dt.timedelta(seconds=overlap_s)})
        self._apply(cur.fetchall())

    def refresh(self, conn, *, overlap_s: float) -> None:
        """Apply what changed since the last refresh (the background refresher's step)."""
        with self._lock:
            try:
                with conn.cursor() as cur:
                    self._refresh(cur, overlap_s)
            finally:
                conn.rollback()

    def start_refresher(self, database_url: str, *, every_s: float, overlap_s: float):
        """Keep the cache current from a daemon thread (its own connection), so that a full
        request finds at most `every_s` of changes to apply: without it, a snapshot asked
        for after a quiet minute would apply a delta of every truck, as slow as the full
        query. Errors are logged and retried on the next tick."""
        import logging

        from core.db import connect

        log = logging.getLogger(__name__)
        stop = threading.Event()

        def run() -> None:
            conn = None
            while not stop.wait(every_s):
                try:
                    if conn is None or conn.closed:
                        conn = connect(database_url, application_name="muck-web-live")
                    self.refresh(conn, overlap_s=overlap_s)
                except Exception:
                    log.exception("live map cache refresh failed; retrying")
                    if conn is not None:
                        conn.close()
                    conn = None
            if conn is not None:
                conn.close()

        thread = threading.Thread(target=run, name="live-cache", daemon=True)
        thread.start()
        return stop

    def _display_coords(self, crs: str) -> tuple[list, list]:
        """Converted lon/lat lists for `crs`, converting only the trucks that moved."""
        n = len(self._updated)
        if crs not in self._display:
            self._display[crs] = ([0.0] * n, [0.0] * n)
            self._stale[crs] = set(range(n))
        out_lon, out_lat = self._display[crs]
        stale = self._stale[crs]
        if stale:
            idx = np.fromiter(stale, dtype=np.int64, count=len(stale))
            lon, lat = from_wgs84(
                np.asarray(self._cols["lon"], dtype=np.float64)[idx],
                np.asarray(self._cols["lat"], dtype=np.float64)[idx],
                crs,
            )
            for j, x, y in zip(
                idx.tolist(), lon.round(7).tolist(), lat.round(7).tolist(), strict=True
            ):
                out_lon[j] = x
                out_lat[j] = y
            stale.clear()
        return out_lon, out_lat

    def _column_json(self, crs: str, name: str) -> bytes:
        converted = name in ("lon", "lat") and crs != "wgs84"
        key = (crs if converted else "", name)
        fragment = self._fragments.get(key)
        if fragment is None:
            values = self._cols[name]
            if converted:
                values = self._display_coords(crs)[0 if name == "lon" else 1]
            fragment = self._fragments[key] = _ENCODER.encode(values)
        return fragment

    def snapshot(self, conn, *, overlap_s: float, crs: str = "wgs84") -> bytes:
        """The same document as `live_trucks(conn, None, ...)`, as JSON bytes."""
        crs = normalise_crs(crs)
        with self._lock:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT now()")
                    server_now = cur.fetchone()[0]
                    self._refresh(cur, overlap_s)
                    top = _with_violations(cur, self._active_top)
                    listed = _listed(cur)
                    columns = (
                        b"{"
                        + b",".join(
                            b'"' + name.encode() + b'":' + self._column_json(crs, name)
                            for name in FIELDS
                        )
                        + b"}"
                    )
                    count = len(self._updated)
                    company_ids = sorted({c for c in self._cols["company_id"] if c is not None})
                    companies = {}
                    if company_ids:
                        cur.execute(
                            "SELECT id, name FROM companies WHERE id = ANY(%s)", (company_ids,)
                        )
                        companies = {str(cid): name for cid, name in cur.fetchall()}
            finally:
                conn.rollback()
        head = {
            "full": True,
            "cursor": str(time_to_cursor(top if top is not None else server_now)),
            "server_ms": int(server_now.timestamp() * 1000),
            "count": count,
            "crs": crs,
            "fields": list(FIELDS),
            "companies": companies,
            "listed": listed,
        }
        text = _ENCODER.encode(head)
        return text[:-1] + b', "trucks": ' + columns + b"}"
