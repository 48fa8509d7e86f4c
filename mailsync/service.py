"""The long-running service, ``mailsync run``.

Every check interval, for each enabled mailbox whose lease it holds or can
take, the service runs the cheap change check and a cycle of what changed
(:func:`~mailsync.sync.check_and_sync`), and every sweep interval a cycle of
every folder. Cycles run in a bounded thread pool: a slow or throttled
mailbox holds one worker and postpones only itself.

Leases (:mod:`mailsync.leases`) keep two instances on one database from
syncing one mailbox at once. Each instance announces itself and takes at
most its share of the enabled mailboxes, so that two instances split them;
one that holds more than its share gives back idle ones. The follow-up
scheduler runs in one instance only, the holder of the ``@followups`` lease.

SIGTERM and SIGINT stop the service: the cycles in hand finish the page
they are writing, commit it and end; the service releases its leases and
exits 0. SIGHUP reloads the configuration; a configuration that cannot be
read is refused with the reason, and the old one stays.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from mailsync import leases
from mailsync.config import Config, MailboxConfig, load_config
from mailsync.connectors import open_connector
from mailsync.connectors.base import ChangeChecker, Connector
from mailsync.errors import TransientError, UserError
from mailsync.metrics import Metrics
from mailsync.store.db import masked
from mailsync.sync import (
    CycleReport,
    CycleStopped,
    check_and_sync,
    record_failure,
    sync_mailbox,
)

log = logging.getLogger(__name__)

FOLLOWUPS = "@followups"
# After SIGTERM, how long the cycles in hand may take to commit their page.
# A worker still waiting then (a server that does not answer, a back-off
# sleep) is abandoned: what it had not committed is simply not there, and
# its mailbox's lease expires.
STOP_GRACE = 8.0


@dataclass
class Outcome:
    report: CycleReport
    sweep: bool


@dataclass
class Slot:
    """One mailbox as the service sees it (monotonic times)."""

    address: str
    due: float = 0.0  # its next cycle may start then
    scheduled: float = 0.0  # when it would, without a server's back-off
    last_sweep: float = 0.0
    held: bool = False
    retired: bool = False  # gone from the configuration: released when idle
    reopen: bool = False  # its settings changed during a cycle: a new connector
    connector: Connector | None = None  # kept open between change checks
    future: Future[Outcome] | None = None
    started: float = 0.0
    wait: float = 0.0


class Service:
    def __init__(
        self,
        config: Config,
        factory: sessionmaker[Session],
        config_path: str | Path | None = None,
        interval: float | None = None,
    ) -> None:
        self.config = config
        self.factory = factory
        self.config_path = config_path
        self.interval_override = interval
        self.holder = leases.new_holder()
        self.pool = ThreadPoolExecutor(
            max_workers=config.service.workers, thread_name_prefix="cycle"
        )
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.reload_wanted = False
        self.slots: dict[str, Slot] = {}
        self.scheduler: Any = None
        self.share = len(self._enabled())
        self.next_renew = 0.0
        self.metrics = Metrics()
        self.metrics_server: ThreadingHTTPServer | None = None
        # Started by stop(): ends the process if the cycles in hand hang.
        self.watchdog: threading.Timer | None = None
        self._add_slots(time.monotonic())

    # --- settings ----------------------------------------------------------

    @property
    def interval(self) -> float:
        return self.interval_override or self.config.service.check_interval

    @property
    def ttl(self) -> float:
        return self.config.service.lease_ttl or 3 * self.interval

    def _enabled(self) -> dict[str, MailboxConfig]:
        return {m.address: m for m in self.config.mailboxes if m.enabled}

    # --- the loop ----------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; the exit code."""
        self._install_signals()
        self.metrics_server = self.metrics.serve(lambda: self.config)
        log.info(
            "service %s started on %s: %d mailboxes, a check every %gs, a sweep "
            "every %gs, %d workers",
            self.holder,
            masked(self.config.database.url),
            len(self.slots),
            self.interval,
            self.config.service.sweep_interval,
            self.config.service.workers,
        )
        try:
            while not self.stopping.is_set():
                # Cleared before the tick: a cycle that ends during it wakes
                # the next wait at once.
                self.wake.clear()
                if self.reload_wanted:
                    self.reload_wanted = False
                    self.reload()
                try:
                    self.tick(time.monotonic())
                except Exception as exc:  # the database is away, say
                    log.error(
                        "service: %s: %s; trying again in %gs",
                        type(exc).__name__,
                        exc,
                        self.interval,
                    )
                    self.next_renew = time.monotonic() + self.interval
                self.wake.wait(self._sleep_time(time.monotonic()))
        finally:
            self.shutdown()
        return 0

    def tick(self, now: float) -> None:
        self._reap(now)
        if now >= self.next_renew:
            self._renew(now)
        self._start_due(now)

    def stop(self) -> None:
        if not self.stopping.is_set() and self.watchdog is None:
            self.watchdog = threading.Timer(STOP_GRACE, self._abandon)
            self.watchdog.daemon = True
            self.watchdog.start()
        self.stopping.set()
        self.wake.set()

    def _abandon(self) -> None:
        busy = [a for a, s in self.slots.items() if s.future and not s.future.done()]
        log.warning(
            "service: cycles of %s still waiting after %gs; exiting without "
            "them (what they committed stays, their leases expire)",
            ", ".join(busy) or "no mailbox",
            STOP_GRACE,
        )
        self._release_leases(keep=busy)  # the others go back, as on a clean stop
        logging.shutdown()
        os._exit(0)

    def _release_leases(self, keep: list[str] | None = None) -> None:
        """Give back every lease this instance holds but those of ``keep``
        (mailboxes whose cycle is stuck: theirs expire by themselves)."""
        names = [a for a, s in self.slots.items() if s.held and a not in (keep or [])]
        names += [FOLLOWUPS, leases.INSTANCE_PREFIX + self.holder]
        try:
            leases.release(self.factory, names, self.holder)
        except Exception as exc:  # they expire by themselves
            log.warning("service: leases not released: %s", exc)

    def _sleep_time(self, now: float) -> float:
        waits = [self.next_renew - now]
        waits += [s.due - now for s in self.slots.values() if s.future is None]
        return max(0.05, min(min(waits), self.interval))

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("service: %s received; stopping", signal.Signals(signum).name)
            self.stop()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self.reload_wanted = True
            self.wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        if hasattr(signal, "SIGHUP"):  # not on Windows
            signal.signal(signal.SIGHUP, on_hup)

    # --- mailboxes ---------------------------------------------------------

    def _add_slots(self, now: float) -> None:
        for address in self._enabled():
            if address not in self.slots:
                self.slots[address] = Slot(
                    address, due=now, scheduled=now, last_sweep=now
                )

    def _start_due(self, now: float) -> None:
        enabled = self._enabled()
        for slot in sorted(self.slots.values(), key=lambda s: s.due):
            if slot.future is not None or slot.retired or now < slot.due:
                continue
            if not slot.held and not self._take(slot, now):
                continue
            slot.started, slot.wait = now, max(0.0, now - slot.scheduled)
            log.debug("mailbox %s: cycle started by %s", slot.address, self.holder)
            sweep = now - slot.last_sweep >= self.config.service.sweep_interval
            if sweep:
                slot.last_sweep = now
            future = self.pool.submit(
                self._cycle, slot, enabled[slot.address], self.config, sweep
            )
            slot.future = future
            future.add_done_callback(lambda _f: self.wake.set())

    def _take(self, slot: Slot, now: float) -> bool:
        held = sum(1 for s in self.slots.values() if s.held)
        if held < self.share and leases.acquire(
            self.factory, slot.address, self.holder, self.ttl
        ):
            slot.held = True
            log.debug("mailbox %s: lease taken by %s", slot.address, self.holder)
            return True
        slot.due = slot.scheduled = now + self.interval
        return False

    def _cycle(
        self, slot: Slot, mailbox: MailboxConfig, config: Config, sweep: bool
    ) -> Outcome:
        """One mailbox's cycle, in a worker: the check, or a sweep."""
        connector = slot.connector
        slot.connector = None
        if connector is None:
            try:
                connector = open_connector(mailbox)
            except Exception as exc:
                record_failure(self.factory, mailbox, exc)
                raise
        keep = isinstance(connector, ChangeChecker)
        options: dict[str, Any] = {
            "keep_open": keep,
            # Stopping, or the lease lost (this host stalled past its TTL and
            # another instance took it): end after the page in hand.
            "stop": lambda: self.stopping.is_set() or not slot.held,
            "log_cycle": False,
        }
        try:
            if sweep or not keep:
                report = sync_mailbox(
                    self.factory, config, mailbox, connector, **options
                )
            else:
                report = check_and_sync(
                    self.factory, config, mailbox, connector, **options
                )
        except TransientError:
            # The server was busy or away: the connector is sound, and what
            # it knows between checks (a subscription, delta links) is kept.
            if keep:
                slot.connector = connector
            raise
        except BaseException:
            if keep:
                connector.close()
            raise
        if keep:
            slot.connector = connector
        return Outcome(report, sweep)

    def _reap(self, now: float) -> None:
        for slot in list(self.slots.values()):
            future = slot.future
            if future is None or not future.done():
                continue
            slot.future = None
            back_off = self._outcome(slot, future, now)
            self.metrics.record_future(slot.address, future, slot.wait)
            if slot.reopen and slot.connector is not None:
                slot.connector.close()  # opened with the old settings
                slot.connector = None
            slot.reopen = False
            slot.scheduled = now + self.interval
            # A server's back-off postpones this mailbox only, never sooner
            # than its interval.
            slot.due = now + (back_off or self.interval)
            if slot.retired:
                self._drop(slot)

    def _outcome(self, slot: Slot, future: Future[Outcome], now: float) -> float | None:
        """Log how the cycle ended; the back-off the server asked for, if any."""
        try:
            outcome = future.result()
        except CycleStopped:
            log.info("mailbox %s: cycle stopped after the page in hand", slot.address)
        except TransientError as exc:
            wait = max(self.interval, exc.retry_after or 0.0)
            log.warning("mailbox %s: %s; next try in %.0fs", slot.address, exc, wait)
            return wait
        except UserError as exc:
            log.error("mailbox %s: %s", slot.address, exc)
        except Exception:
            log.exception("mailbox %s: cycle failed (a bug)", slot.address)
        else:
            self._log_cycle(slot, outcome)
        return None

    def _log_cycle(self, slot: Slot, outcome: Outcome) -> None:
        """The cycle's line: INFO when it read anything (or was a sweep),
        DEBUG for an idle mailbox's, so that a quiet office's log stays short."""
        report = outcome.report
        busy = report.items or report.removed or report.rejected or report.error
        line = report.log_line() + ", waited %.1fs, %s"
        log.log(
            logging.INFO if busy or outcome.sweep else logging.DEBUG,
            line,
            *report.log_args(),
            slot.wait,
            "sweep" if outcome.sweep else "check",
        )
        if report.error:
            log.warning("mailbox %s: %s", slot.address, report.error)

    def _drop(self, slot: Slot) -> None:
        if slot.connector is not None:
            slot.connector.close()
            slot.connector = None
        if slot.held:
            leases.release(self.factory, [slot.address], self.holder)
            slot.held = False
        if slot.retired:
            del self.slots[slot.address]
            self.metrics.forget(slot.address)

    # --- leases ------------------------------------------------------------

    def _renew(self, now: float) -> None:
        """Renew our leases, learn our share, give back what exceeds it."""
        self.next_renew = now + min(self.interval, self.ttl / 3)
        try:
            live = leases.live_instances(self.factory, self.holder, self.ttl)
            held = {a for a, s in self.slots.items() if s.held}
            kept = leases.renew(self.factory, held | {FOLLOWUPS}, self.holder, self.ttl)
        except Exception as exc:
            log.warning("service: cannot renew the leases: %s", exc)
            return
        for address in held - kept:
            log.warning("mailbox %s: lease lost to another instance", address)
            self.slots[address].held = False
        enabled = len(self._enabled())
        self.share = -(-enabled // live)
        self._give_back()
        self._followups(FOLLOWUPS in kept)

    def _give_back(self) -> None:
        held = [s for s in self.slots.values() if s.held]
        excess = len(held) - self.share
        for slot in held:
            if excess <= 0:
                break
            if slot.future is None:
                log.info("mailbox %s: lease given back to share", slot.address)
                self._drop(slot)
                excess -= 1

    def _followups(self, held: bool) -> None:
        """The follow-up scheduler runs in the holder of the @followups lease."""
        if self.scheduler is not None and not held:
            log.warning("follow-ups: lease lost; scheduler stopped here")
            self._stop_scheduler()
        if self.scheduler is not None or not self.config.followups.enabled:
            return
        if not leases.acquire(self.factory, FOLLOWUPS, self.holder, self.ttl):
            return
        from mailsync.reminders.scheduler import start_scheduler

        try:
            self.scheduler = start_scheduler(self.factory, self.config)
        except Exception:
            log.exception("follow-ups: the scheduler cannot start")
            leases.release(self.factory, [FOLLOWUPS], self.holder)

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None

    # --- reload and shutdown -----------------------------------------------

    def reload(self) -> None:
        """Read the configuration again; keep the old one if it is wrong."""
        try:
            new = load_config(self.config_path)
        except UserError as exc:
            log.error("service: configuration not reloaded, the old one stays: %s", exc)
            return
        if new.database.url != self.config.database.url:
            log.error(
                "service: configuration not reloaded, the old one stays: "
                "database.url changed; restart the service to use another database"
            )
            return
        old = self._enabled()
        self.config = new
        now = time.monotonic()
        for address, slot in self.slots.items():
            mailbox = new.mailbox(address) if address in self._enabled() else None
            if mailbox is None:
                slot.retired = True
            elif mailbox != old.get(address):
                # Opened again with the new settings: now, or after the
                # cycle in hand, which holds the connector meanwhile.
                slot.reopen = slot.future is not None
                if slot.connector is not None:
                    slot.connector.close()
                    slot.connector = None
        removed = sorted(a for a, s in self.slots.items() if s.retired)
        for slot in [s for s in self.slots.values() if s.retired and not s.future]:
            self._drop(slot)
        added = sorted(set(self._enabled()) - set(self.slots))
        self._add_slots(now)
        self.next_renew = now  # a new share, at once
        if self.scheduler is not None:
            self._stop_scheduler()
            leases.release(self.factory, [FOLLOWUPS], self.holder)
        log.info(
            "service: configuration reloaded: %d mailboxes (added: %s; removed: %s)",
            len(self.slots),
            ", ".join(added) or "none",
            ", ".join(removed) or "none",
        )

    def shutdown(self) -> None:
        """Let the cycles in hand commit their page, then release everything."""
        self.stopping.set()
        self.pool.shutdown(wait=True)
        self._reap(time.monotonic())
        self._stop_scheduler()
        for slot in self.slots.values():
            if slot.connector is not None:
                slot.connector.close()
                slot.connector = None
        self._release_leases()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
            self.metrics_server = None
        if self.watchdog is not None:  # stopped in time
            self.watchdog.cancel()
            self.watchdog = None
        log.info("service %s stopped", self.holder)
