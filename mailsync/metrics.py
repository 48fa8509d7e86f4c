"""The service's health endpoint and Prometheus metrics.

``mailsync run`` serves, on ``[service] metrics_host:metrics_port`` (by
default 127.0.0.1:9464, loopback only; 0 turns it off):

- ``GET /metrics``: the Prometheus text format. Counters per mailbox of items
  synced, new activities, links, rejected items, errors by kind and the
  seconds cycles waited past their time (a server's back-off); a histogram of
  cycle durations; the time of each mailbox's last cycle and its lag (now
  minus its last successful cycle, computed when scraped).
- ``GET /health``: JSON, ``status`` ``ok`` (HTTP 200) when every enabled
  mailbox had a successful cycle within three sweep intervals or has not had
  its first cycle yet, else ``degraded`` (HTTP 503).

Each :class:`Metrics` has a registry of its own, not prometheus_client's
global one, so that two services in one process (tests) do not share series.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mailsync.config import Config
from mailsync.errors import ConfigError, TransientError, UserError
from mailsync.sync import CycleReport, CycleStopped

log = logging.getLogger(__name__)

# Cycle durations: a check of an idle mailbox takes well under a second, a
# back-fill page several minutes.
BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

Health = tuple[int, dict[str, Any]]


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of a failed cycle's error."""
    if isinstance(exc, TransientError):
        return "transient"
    if isinstance(exc, ConfigError):
        return "config"
    if isinstance(exc, UserError):
        return "user"
    return type(exc).__name__


@dataclass
class MailboxState:
    last_cycle: float | None = None  # wall-clock times
    last_success: float | None = None
    last_error: str | None = None


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self.states: dict[str, MailboxState] = {}
        self.lock = threading.Lock()
        self._define()
        self.registry.register(_Lag(self))

    def _define(self) -> None:
        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(name, text, ["mailbox", *labels], registry=self.registry)

        self.items = counter("mailsync_items_synced", "Items read and filed.")
        self.new = counter("mailsync_activities_new", "New activities written.")
        self.links = counter("mailsync_links", "Links to contacts and accounts.")
        self.rejected = counter("mailsync_rejected", "Items rejected with a reason.")
        self.errors = counter("mailsync_errors", "Errors by kind.", "kind")
        self.throttle = counter(
            "mailsync_throttle_wait_seconds",
            "Seconds cycles started late, waiting for a server's back-off.",
        )
        self.duration = Histogram(
            "mailsync_cycle_duration_seconds",
            "How long a mailbox's cycle took.",
            ["mailbox"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.last_cycle = Gauge(
            "mailsync_last_cycle_timestamp_seconds",
            "When the mailbox's last cycle ended (Unix time).",
            ["mailbox"],
            registry=self.registry,
        )

    def state(self, mailbox: str) -> MailboxState:
        return self.states.setdefault(mailbox, MailboxState())

    # --- recording ---------------------------------------------------------

    def record_cycle(self, report: CycleReport, wait: float) -> None:
        """One cycle that ended with its report (a folder may have failed)."""
        mailbox, now = report.mailbox, self.clock()
        self.items.labels(mailbox).inc(report.items)
        self.new.labels(mailbox).inc(report.new)
        self.links.labels(mailbox).inc(report.links)
        self.rejected.labels(mailbox).inc(report.rejected)
        self.throttle.labels(mailbox).inc(max(0.0, wait))
        self.duration.labels(mailbox).observe(report.duration)
        self.last_cycle.labels(mailbox).set(now)
        if report.error:
            # A folder skipped this cycle; the others were synced.
            self.errors.labels(mailbox, "folder").inc()
        with self.lock:
            state = self.state(mailbox)
            state.last_cycle = now
            state.last_error = report.error
            if report.error is None:
                state.last_success = now

    def record_failure(self, mailbox: str, exc: BaseException, wait: float) -> None:
        """One cycle that ended with an exception instead of a report."""
        now = self.clock()
        self.errors.labels(mailbox, error_kind(exc)).inc()
        self.throttle.labels(mailbox).inc(max(0.0, wait))
        self.last_cycle.labels(mailbox).set(now)
        with self.lock:
            state = self.state(mailbox)
            state.last_cycle = now
            state.last_error = f"{type(exc).__name__}: {exc}"

    def forget(self, mailbox: str) -> None:
        """A mailbox removed or disabled: its lag is no longer reported (it
        would grow and page someone); its counters stay, as counters do."""
        with self.lock:
            self.states.pop(mailbox, None)

    def record_future(self, mailbox: str, future: Future[Any], wait: float) -> None:
        """A finished cycle of the service's pool, whatever its end."""
        exc = future.exception()
        if isinstance(exc, CycleStopped):
            return  # the service is stopping or lost the lease: no verdict
        if exc is not None:
            self.record_failure(mailbox, exc, wait)
        else:
            self.record_cycle(future.result().report, wait)

    # --- health ------------------------------------------------------------

    def health(self, mailboxes: Iterable[str], max_age: float) -> Health:
        """HTTP status and JSON body: every mailbox healthy, or not."""
        now, body = self.clock(), {}
        with self.lock:
            states = {m: MailboxState(**vars(self.state(m))) for m in mailboxes}
        healthy = True
        for mailbox, state in states.items():
            fresh = state.last_success is not None and (
                now - state.last_success <= max_age
            )
            ok = state.last_cycle is None or fresh
            healthy = healthy and ok
            body[mailbox] = {
                "ok": ok,
                "last_cycle": state.last_cycle,
                "last_success": state.last_success,
                "last_error": state.last_error,
            }
        status = "ok" if healthy else "degraded"
        return (200 if healthy else 503), {"status": status, "mailboxes": body}

    def serve(self, config: Callable[[], Config]) -> ThreadingHTTPServer | None:
        """Start the endpoint of ``[service]``, if it has a port; the server.

        A port already taken is logged and the service goes on without it.
        """
        service = config().service
        if not service.metrics_port:
            return None

        def health() -> Health:
            now = config()
            enabled = [m.address for m in now.mailboxes if m.enabled]
            return self.health(enabled, 3 * now.service.sweep_interval)

        try:
            return self.start_http(service.metrics_host, service.metrics_port, health)
        except OSError as exc:
            log.error(
                "metrics: cannot listen on %s:%d: %s; free the port, or set "
                "[service] metrics_port to another one (0: no metrics)",
                service.metrics_host,
                service.metrics_port,
                exc,
            )
            return None

    def start_http(
        self, host: str, port: int, health: Callable[[], Health]
    ) -> ThreadingHTTPServer:
        """Serve /metrics and /health on a daemon thread; the server."""
        server = ThreadingHTTPServer((host, port), _handler(self, health))
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever, name="metrics", daemon=True
        )
        thread.start()
        log.info(
            "metrics: serving http://%s:%d/metrics and /health",
            host,
            server.server_address[1],
        )
        return server


class _Lag(Collector):
    """mailsync_lag_seconds, computed when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "mailsync_lag_seconds",
            "Seconds since the mailbox's last successful cycle.",
            labels=["mailbox"],
        )
        now = self.metrics.clock()
        with self.metrics.lock:
            for mailbox, state in sorted(self.metrics.states.items()):
                if state.last_success is not None:
                    family.add_metric([mailbox], now - state.last_success)
        yield family


def _handler(
    metrics: Metrics, health: Callable[[], Health]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            elif path == "/health":
                code, body = health()
                data = json.dumps(body, indent=1).encode("utf-8")
                self._send(code, "application/json", data)
            else:
                self._send(404, "text/plain", b"only /metrics and /health\n")

        def _send(self, code: int, kind: str, data: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics: %s", format % args)

    return Handler
