"""The dispatcher: fan-out, then delivery, in one background loop of the collector process.

`muck collect` and `muck demo` start it beside the JobRunner, in a child process of their own
(`DispatcherProcess`; `--no-alerts` leaves it out); `muck alerts run` runs it alone. It sleeps on LISTEN: compliance NOTIFYs 'violation_events'
when a transaction that recorded events commits (one NOTIFY per batch,
compliance/sql/0015), fan-out NOTIFYs 'alert_outbox' when it queued deliveries and the admin
page does so on retry. Without a notification it wakes every `alerts.poll_s` anyway, and when
the next retry falls due. Deliveries run on `alerts.workers` threads, so one slow receiver
does not hold up the others; every outcome is written back to the outbox.

Any number of dispatchers may run (one per collector): fan-out passes take turns on the
cursor row and deliveries are claimed with SKIP LOCKED.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from alerts.channels import send_apprise
from alerts.fanout import FanOut
from alerts.outbox import Delivery, claim_due, record_outcomes, seconds_to_next_due
from alerts.webhook import post
from core.db import connect_settings

log = logging.getLogger(__name__)


@dataclass
class DispatcherStats:
    fanned_out: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    errors: int = 0


class Dispatcher:
    SENDING_POLL_S = 0.02

    def __init__(self, settings: Any) -> None:
        cfg = settings["alerts"]
        self.settings = settings
        self.poll_s = float(cfg["poll_s"])
        self.batch = int(cfg["batch"])
        self.lease_s = float(cfg["lease_s"])
        self.timeout_s = float(cfg["timeout_s"])
        self.workers = int(cfg["workers"])
        # Deliveries handed to the senders and not yet finished, at most: enough to keep
        # every sender busy, few enough that a dead receiver's timeouts hold up little.
        self.max_sending = max(self.batch, 2 * self.workers)
        self.fanout = FanOut(settings, claim_lease_s=self.lease_s)
        self.stats = DispatcherStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one round ---------------------------------------------------------------------

    def deliver(self, delivery: Delivery) -> str | None:
        """Send one alert; None when it went through, else why not."""
        if not delivery.active:
            return None
        try:
            if delivery.channel == "webhook":
                post(
                    delivery.target,
                    delivery.secret,
                    delivery.body.encode(),
                    delivery.key,
                    self.timeout_s,
                )
            else:
                send_apprise(delivery.target, json.loads(delivery.body), self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure is retried, never fatal
            return str(exc) or type(exc).__name__
        return None

    def step(self, conn, pool: ThreadPoolExecutor, sending: dict[Future, Delivery]) -> bool:
        """Fan out what is new, hand what is due to the senders, record what they finished;
        True when there may be more to do at once.

        Deliveries are a pipeline, not rounds: what fan-out claims goes to the senders at
        once, and the next fan-out pass runs while they send. Waiting for a whole batch
        before fanning out the next (session 6) made the last alert of a 2,000-violation
        burst wait for three batches before it; now it waits only for the senders."""
        fanned = self.fanout.run(conn)
        self.stats.fanned_out += fanned.alerts
        due = fanned.claimed
        room = self.max_sending - len(sending)
        if not due and room > 0:
            due = claim_due(conn, min(self.batch, room), self.lease_s)
        for delivery in due:
            sending[pool.submit(self.deliver, delivery)] = delivery
        # Finished deliveries alone are no reason to go round at once: their outcomes are
        # written together, every SENDING_POLL_S, instead of a commit per alert or two.
        self._record_finished(conn, sending)
        return bool(due) or fanned.events >= self.fanout.batch

    # -- the loop ----------------------------------------------------------------------

    def _listen(self):
        conn = connect_settings(self.settings, application_name="muck-alerts-listen")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("LISTEN violation_events")
            cur.execute("LISTEN alert_outbox")
        return conn

    def _wait(self, listen, work, sending: dict[Future, Delivery]) -> None:
        """Sleep until a notification, a due retry, or (while alerts are being sent) the
        first of them finishing, whichever comes first."""
        if sending:
            # Outcomes are written in groups: a sender's result waits at most this long.
            timeout = self.SENDING_POLL_S
        else:
            timeout = self.poll_s
            nxt = seconds_to_next_due(work)
            if nxt is not None:
                timeout = min(timeout, nxt)
        if timeout > 0 and select.select([listen], [], [], timeout)[0]:
            listen.poll()
        listen.notifies.clear()

    def run(self, stop: threading.Event | None = None) -> None:
        """Loop until `stop` is set; database failures are logged and retried."""
        stop = stop or self._stop
        listen = work = None
        pause = 0.5
        sending: dict[Future, Delivery] = {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="alert-send") as pool:
            while not stop.is_set() or sending:
                try:
                    if work is None:
                        work = connect_settings(self.settings, application_name="muck-alerts")
                        listen = self._listen()
                    if stop.is_set():  # finish what is being sent, record it, then go
                        wait(sending, timeout=self.timeout_s + 1)
                        self._record_finished(work, sending)
                        break
                    if not self.step(work, pool, sending):
                        self._wait(listen, work, sending)
                    pause = 0.5
                except Exception as exc:  # noqa: BLE001 - the loop outlives a database outage
                    self.stats.errors += 1
                    log.warning("alert dispatcher: %s", exc)
                    for conn in (work, listen):
                        if conn is not None:
                            try:
                                conn.close()
                            except Exception:  # noqa: BLE001 - it is being thrown away
                                pass
                    work = listen = None
                    # What was being sent stays leased: claimed again when the lease ends.
                    sending.clear()
                    stop.wait(pause)
                    pause = min(pause * 2, 10.0)
        for conn in (work, listen):
            if conn is not None:
                conn.close()

    def _record_finished(self, conn, sending: dict[Future, Delivery]) -> int:
        """Write the outcome of every delivery the senders finished, in one go; how many."""
        finished = [future for future in sending if future.done()]
        outcomes = [(sending.pop(future), future.result()) for future in finished]
        if outcomes:
            self.stats.dead += record_outcomes(conn, self.settings, outcomes)
            failed = sum(1 for _, error in outcomes if error is not None)
            self.stats.failed += failed
            self.stats.delivered += len(outcomes) - failed
        return len(outcomes)

    def start(self) -> Dispatcher:
        self._thread = threading.Thread(target=self.run, name="alert-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def describe(self) -> str:
        s = self.stats
        return (
            f"alerts fanned_out={s.fanned_out} delivered={s.delivered} failed={s.failed} "
            f"dead={s.dead} errors={s.errors}"
        )


def _process_main(settings: Any, stop: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the collector decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    dispatcher = Dispatcher(settings)

    def orphaned() -> None:  # the collector was killed: do not outlive it
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=orphaned, daemon=True).start()
    dispatcher.run(stop)
    print(dispatcher.describe(), file=sys.stderr, flush=True)


class DispatcherProcess:
    """The dispatcher in a child process: its Python work (payloads, HTTP) never competes with
    the collector's reader and writer threads for the interpreter lock, so alerts neither slow
    ingestion nor wait for it. Stops with the collector; exits by itself if the collector
    is killed."""

    def __init__(self, settings: Any) -> None:
        ctx = multiprocessing.get_context("spawn")  # no inherited threads or sockets
        self._stop = ctx.Event()
        self._process = ctx.Process(
            target=_process_main,
            args=(settings, self._stop, os.getpid()),
            name="muck-alerts",
            daemon=True,
        )

    def start(self) -> DispatcherProcess:
        self._process.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)

    def describe(self) -> str:
        return f"alerts dispatcher process exited with {self._process.exitcode}"


def start_dispatcher(settings: Any) -> DispatcherProcess | None:
    """The dispatcher of a collector process (`muck collect`, `muck demo`), running in a
    child process; None when `alerts.enabled` is off."""
    if not settings["alerts"]["enabled"]:
        return None
    return DispatcherProcess(settings).start()
