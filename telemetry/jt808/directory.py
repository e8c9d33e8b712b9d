"""What the gateway asks the database: is this terminal in the registry (0x0100), is its
auth code right (0x0102), and where bad frames go (the quarantine every other bad message
goes to, `telemetry/sql/0002_ingest_tables.sql`).

Everything runs on one database thread with one connection, so the event loop never waits
on PostgreSQL; the connection is reopened after a failure. Quarantine rows are written in
batches (`flush_quarantine`, every second), bounded in memory: when the database is away
for long, the oldest bad frames are dropped and counted rather than the gateway's memory.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hmac
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg2
import psycopg2.extras

from core.db import connect
from telemetry.jt808.frames import Problem, canonical_phone
from telemetry.jt808.messages import NO_SUCH_TERMINAL, REGISTERED, Registration

log = logging.getLogger(__name__)

_QUARANTINE_BACKLOG = 100_000


@dataclass(slots=True)
class RegisterOutcome:
    result: int  # 0x8100 result code
    auth_code: str
    device_id: str  # the registry's device id, or the id an unknown terminal claimed


class TerminalDirectory:
    def __init__(self, database_url: str, quarantine_payload_bytes: int = 4096) -> None:
        self.database_url = database_url
        self.quarantine_payload_bytes = quarantine_payload_bytes
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jt808-db")
        self._conn = None
        self._quarantine: collections.deque = collections.deque(maxlen=_QUARANTINE_BACKLOG)
        self.quarantine_dropped = 0

    # --- on the database thread --------------------------------------------------------------

    def _cursor(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.database_url, application_name="muck-gateway-jt808")
        return self._conn.cursor()

    def _run(self, work):
        try:
            with self._cursor() as cur:
                result = work(cur)
            self._conn.commit()
            return result
        except psycopg2.Error:
            if self._conn is not None:
                try:
                    self._conn.close()
                except psycopg2.Error:  # pragma: no cover - already broken
                    pass
            self._conn = None
            raise

    def _register(self, phone: str, reg: Registration) -> RegisterOutcome:
        candidates = [canonical_phone(phone)]
        if reg.terminal_id and reg.terminal_id not in candidates:
            candidates.append(reg.terminal_id)

        def work(cur) -> RegisterOutcome:
            # The terminal is known when the registry binds its phone (or the terminal id it
            # sent) to a truck now; the phone wins over the terminal id.
            cur.execute(
                """SELECT device_id FROM terminals
                   WHERE device_id = ANY(%s) AND valid_from <= now()
                     AND (valid_to IS NULL OR valid_to > now())
                   ORDER BY array_position(%s, device_id) LIMIT 1""",
                (candidates, candidates),
            )
            row = cur.fetchone()
            if row is None:
                return RegisterOutcome(NO_SUCH_TERMINAL, "", candidates[-1])
            code = secrets.token_hex(8)
            cur.execute(
                """INSERT INTO jt808_terminals (phone, device_id, auth_code, terminal_id, plate,
                       plate_color, manufacturer, model, registered_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
                   ON CONFLICT (phone) DO UPDATE SET device_id = EXCLUDED.device_id,
                       auth_code = EXCLUDED.auth_code, terminal_id = EXCLUDED.terminal_id,
                       plate = EXCLUDED.plate, plate_color = EXCLUDED.plate_color,
                       manufacturer = EXCLUDED.manufacturer, model = EXCLUDED.model,
                       registered_at = now(), authenticated_at = NULL""",
                (
                    candidates[0],
                    row[0],
                    code,
                    reg.terminal_id,
                    reg.plate,
                    reg.plate_color,
                    reg.manufacturer,
                    reg.model,
                ),
            )
            return RegisterOutcome(REGISTERED, code, row[0])

        return self._run(work)

    def _authenticate(self, phone: str, code: str) -> str | None:
        def work(cur) -> str | None:
            cur.execute(
                "SELECT device_id, auth_code FROM jt808_terminals WHERE phone = %s",
                (canonical_phone(phone),),
            )
            row = cur.fetchone()
            if row is None or not hmac.compare_digest(row[1].encode(), code.encode()):
                return None
            cur.execute(
                "UPDATE jt808_terminals SET authenticated_at = now() WHERE phone = %s",
                (canonical_phone(phone),),
            )
            return row[0]

        return self._run(work)

    def _flush(self) -> int:
        rows = []
        while self._quarantine:
            rows.append(self._quarantine.popleft())
        if not rows:
            return 0
        limit = self.quarantine_payload_bytes

        def work(cur) -> int:
            psycopg2.extras.execute_values(
                cur,
                """INSERT INTO quarantine (received_at, topic, device_id, reason, detail,
                                           payload, payload_bytes) VALUES %s""",
                [
                    (at, topic, device, p.reason, p.detail[:1000], p.raw[:limit], len(p.raw))
                    for at, topic, device, p in rows
                ],
            )
            return len(rows)

        try:
            return self._run(work)
        except psycopg2.Error:
            # Put them back (newest kept if the backlog overflows) and try again next time.
            self._quarantine.extendleft(reversed(rows))
            raise

    # --- from the event loop -----------------------------------------------------------------

    async def register(self, phone: str, reg: Registration) -> RegisterOutcome:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._register, phone, reg
        )

    async def authenticate(self, phone: str, code: str) -> str | None:
        """The device id of a terminal whose code is right, else None."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._authenticate, phone, code
        )

    def quarantine(self, problem: Problem, device_id: str | None = None) -> None:
        if len(self._quarantine) == self._quarantine.maxlen:
            self.quarantine_dropped += 1
        topic = f"jt808/{canonical_phone(problem.phone) if problem.phone else '-'}"
        self._quarantine.append((dt.datetime.now(dt.UTC), topic, device_id, problem))

    async def flush_quarantine(self) -> int:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._flush)
        except psycopg2.Error as exc:
            log.warning("quarantine not written yet (%s); %d held", exc, len(self._quarantine))
            return 0

    def close(self) -> None:
        self._executor.submit(self._flush_quietly).result(timeout=30)
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()

    def _flush_quietly(self) -> None:
        try:
            self._flush()
        except psycopg2.Error as exc:
            log.warning("%d quarantined frames lost at exit: %s", len(self._quarantine), exc)
