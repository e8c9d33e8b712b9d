"""`muck loadtest --reference-database`: did the collectors under test store and judge the
stream exactly as one collector did?

The load test's collectors (several sharing a subscription, one of them perhaps killed
mid-stream) write to the main database; one more collector with a subscription of its own
receives the very same messages from the broker and writes to a reference database set up
like the first (same zones, permits and settings). Afterwards both databases are read back:

* the rows: every stored fix of the run's devices, compared as a digest of the fields the
  rules read (device, fix time, position, speed, heading, sensors, seq) and row by row when
  the digests differ;
* the violations: the set of violations that stand (not withdrawn), keyed by plate, kind,
  stream and start, with their end and worst value; and how many were opened and then
  withdrawn by a late-fix replay, which the alert dispatcher may already have announced.

Trucks are matched by plate (both databases register the run's devices under the same
plates), never by id: the two databases number their trucks independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The fields of a fix the rules read, in a fixed order: equal digests mean equal rows.
_ROW = (
    "device_id, (extract(epoch FROM fix_time) * 1000)::bigint, seq, round(lat::numeric, 7), "
    "round(lon::numeric, 7), speed_kmh, heading, lid, lift, load"
)


@dataclass(frozen=True)
class ViolationKey:
    plate: str
    kind: str
    stream: str
    started_ms: int
    ended_ms: int | None
    worst: float | None

    def label(self) -> str:
        end = "open" if self.ended_ms is None else f"{(self.ended_ms - self.started_ms) / 1000:g} s"
        return f"{self.plate} {self.kind}/{self.stream} at {self.started_ms} ({end})"


@dataclass
class DatabaseReading:
    rows: int = 0
    digest: str = ""
    standing: set[ViolationKey] = field(default_factory=set)
    withdrawn: int = 0


@dataclass
class Comparison:
    main: DatabaseReading
    reference: DatabaseReading
    rows_only_main: list[str] = field(default_factory=list)  # first few, as text
    rows_only_reference: list[str] = field(default_factory=list)

    @property
    def same_rows(self) -> bool:
        return self.main.rows == self.reference.rows and self.main.digest == self.reference.digest

    @property
    def violations_only_main(self) -> list[ViolationKey]:
        return sorted(self.main.standing - self.reference.standing, key=_order)

    @property
    def violations_only_reference(self) -> list[ViolationKey]:
        return sorted(self.reference.standing - self.main.standing, key=_order)

    @property
    def same_violations(self) -> bool:
        return self.main.standing == self.reference.standing

    def problems(self) -> list[str]:
        """What differs, for the verdict; empty when the collectors did what one did."""
        found = []
        if not self.same_rows:
            found.append(
                f"the rows differ from the reference collector's ({self.main.rows:,} stored "
                f"against {self.reference.rows:,})"
            )
        if not self.same_violations:
            found.append(
                f"the standing violations differ from the reference collector's "
                f"({len(self.violations_only_main)} only here, "
                f"{len(self.violations_only_reference)} only in the reference)"
            )
        return found


def _order(key: ViolationKey) -> tuple:
    return (key.plate, key.kind, key.stream, key.started_ms)


def read_database(conn, devices: list[str], since: float) -> DatabaseReading:
    """The run's rows and violations in one database."""
    reading = DatabaseReading()
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT count(*), coalesce(md5(string_agg(row_text, '|' ORDER BY row_text)), '')
                FROM (SELECT concat_ws(',', {_ROW}) AS row_text FROM positions
                      WHERE device_id = ANY(%s) AND fix_time >= to_timestamp(%s)) r""",  # noqa: S608 - constant fragment
            (devices, since),
        )
        reading.rows, reading.digest = cur.fetchone()
        cur.execute(
            """SELECT t.plate, v.kind, v.stream,
                      (extract(epoch FROM v.started_at) * 1000)::bigint,
                      (extract(epoch FROM v.ended_at) * 1000)::bigint,
                      round(v.worst_value::numeric, 3)::float8,
                      v.status = 'withdrawn'
               FROM violations v JOIN trucks t ON t.id = v.truck_id
               JOIN terminals d ON d.truck_id = t.id
               WHERE d.device_id = ANY(%s) AND v.started_at >= to_timestamp(%s)""",
            (devices, since),
        )
        for plate, kind, stream, started, ended, worst, withdrawn in cur.fetchall():
            if withdrawn:
                reading.withdrawn += 1
            else:
                reading.standing.add(ViolationKey(plate, kind, stream, started, ended, worst))
    conn.commit()
    return reading


def _row_sample(conn, devices: list[str], since: float) -> set[str]:
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT concat_ws(',', {_ROW}) FROM positions
                WHERE device_id = ANY(%s) AND fix_time >= to_timestamp(%s)""",  # noqa: S608 - constant fragment
            (devices, since),
        )
        rows = {r[0] for r in cur.fetchall()}
    conn.commit()
    return rows


def compare(main_conn, reference_conn, devices: list[str], since: float) -> Comparison:
    result = Comparison(
        read_database(main_conn, devices, since), read_database(reference_conn, devices, since)
    )
    if not result.same_rows:
        # Only when they differ: reading every row back costs a full scan of the run.
        main_rows = _row_sample(main_conn, devices, since)
        reference_rows = _row_sample(reference_conn, devices, since)
        result.rows_only_main = sorted(main_rows - reference_rows)[:5]
        result.rows_only_reference = sorted(reference_rows - main_rows)[:5]
    return result
