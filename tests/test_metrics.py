"""The health endpoint and Prometheus metrics of `mailsync run`.

Cycles are real (the Contoso maildir into SQLite) and the endpoint is a real
HTTP server on an ephemeral loopback port, read back with urllib and parsed
with prometheus_client's own parser of the text format.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailsync.config import parse_config
from mailsync.errors import ConfigError, TransientError
from mailsync.metrics import Metrics
from mailsync.store import db
from mailsync.sync import CycleReport, sync_mailbox
from tests.conftest import contoso_config
from tests.ews.conftest import REP, SERVICE_PASSWORD
from tests.ews.conftest import ews as ews  # noqa: F401  (the fixture)
from tests.test_service import (
    ANDY,
    CONTOSO_ITEMS,
    Running,
    calls_of,
    copy_contoso,
    ews_service,
    opened,
    run_for,
    run_until_synced,
    running,  # noqa: F401  (the fixture)
    sqlite_url,
    wait_for,
    write_config,
)

TAMARA = "tamara@contoso.com"


class Clock:
    """Wall-clock time the test moves by hand."""

    def __init__(self, now: float = 1_780_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


@pytest.fixture
def contoso_cycle(tmp_path: Path) -> CycleReport:
    """One real cycle of the Contoso maildir."""
    url = sqlite_url(tmp_path / "ms.db")
    engine = db.open_engine(url)
    db.upgrade(engine)
    config = contoso_config(url, copy_contoso(tmp_path / "maildir"))
    report = sync_mailbox(db.sessions(engine), config, config.mailboxes[0])
    engine.dispose()
    return report


@pytest.fixture
def served() -> Iterator[tuple[Metrics, Clock, str, list[str]]]:
    """Metrics on a clock of the test's, served on an ephemeral port."""
    clock = Clock()
    metrics = Metrics(clock=clock)
    enabled = [TAMARA]
    server = metrics.start_http(
        "127.0.0.1", 0, lambda: metrics.health(enabled, max_age=3 * 3600)
    )
    host, port = server.server_address[:2]
    yield metrics, clock, f"http://{host}:{port}", enabled
    server.shutdown()
    server.server_close()


def test_record_cycle_adds_the_reports_numbers(contoso_cycle):
    report = contoso_cycle
    assert (report.items, report.error) == (CONTOSO_ITEMS, None)
    assert report.new > 0  # no contacts imported: links stay 0
    metrics = Metrics(clock=Clock())

    metrics.record_cycle(report, wait=2.5)
    metrics.record_cycle(CycleReport(TAMARA, items=3, new=1, links=2, rejected=1), 0)

    def counted(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"mailbox": TAMARA})

    assert counted("mailsync_items_synced_total") == CONTOSO_ITEMS + 3
    assert counted("mailsync_activities_new_total") == report.new + 1
    assert counted("mailsync_links_total") == report.links + 2
    assert counted("mailsync_rejected_total") == report.rejected + 1
    assert counted("mailsync_throttle_wait_seconds_total") == 2.5
    assert counted("mailsync_cycle_duration_seconds_count") == 2
    assert counted("mailsync_cycle_duration_seconds_sum") == pytest.approx(
        report.duration
    )


def test_a_mailbox_forgotten_reports_no_lag():
    clock = Clock()
    metrics = Metrics(clock=clock)
    metrics.record_cycle(CycleReport(TAMARA, items=1), 0)
    clock.now += 30

    def lag() -> float | None:
        return metrics.registry.get_sample_value(
            "mailsync_lag_seconds", {"mailbox": TAMARA}
        )

    assert lag() == 30
    metrics.forget(TAMARA)  # removed from the configuration, or disabled
    assert lag() is None


def test_failures_are_counted_by_kind():
    metrics = Metrics(clock=Clock())
    metrics.record_failure(TAMARA, TransientError("server busy"), wait=0)
    metrics.record_failure(TAMARA, TransientError("server busy"), wait=30)
    metrics.record_failure(TAMARA, ConfigError("path missing"), wait=0)
    metrics.record_failure(TAMARA, KeyError("x"), wait=0)
    metrics.record_cycle(CycleReport(TAMARA, error="folder Inbox: ValueError"), 0)

    def errors(kind: str) -> float | None:
        return metrics.registry.get_sample_value(
            "mailsync_errors_total", {"mailbox": TAMARA, "kind": kind}
        )

    assert [errors(k) for k in ("transient", "config", "KeyError", "folder")] == [
        2,
        1,
        1,
        1,
    ]
    assert errors("user") is None
    assert (
        metrics.registry.get_sample_value(
            "mailsync_throttle_wait_seconds_total", {"mailbox": TAMARA}
        )
        == 30
    )


def test_metrics_endpoint_serves_the_series_in_the_text_format(served, contoso_cycle):
    metrics, clock, url, _ = served
    metrics.record_cycle(contoso_cycle, wait=1.0)
    ended = clock.now

    status, text = get(url + "/metrics")
    assert status == 200
    assert value(text, "mailsync_items_synced_total", mailbox=TAMARA) == 38
    assert value(text, "mailsync_activities_new_total", mailbox=TAMARA) == (
        contoso_cycle.new
    )
    assert value(text, "mailsync_links_total", mailbox=TAMARA) == contoso_cycle.links
    assert value(text, "mailsync_throttle_wait_seconds_total", mailbox=TAMARA) == 1
    assert value(text, "mailsync_cycle_duration_seconds_count", mailbox=TAMARA) == 1
    assert value(text, "mailsync_last_cycle_timestamp_seconds", mailbox=TAMARA) == (
        ended
    )
    assert value(text, "mailsync_lag_seconds", mailbox=TAMARA) == 0

    # The lag is computed when scraped, from the last successful cycle.
    clock.now += 125
    metrics.record_failure(TAMARA, TransientError("server busy"), wait=0)
    clock.now += 5
    _, text = get(url + "/metrics")
    assert value(text, "mailsync_lag_seconds", mailbox=TAMARA) == 130
    assert value(text, "mailsync_last_cycle_timestamp_seconds", mailbox=TAMARA) == (
        ended + 125
    )
    assert get(url + "/other")[0] == 404


def test_health_is_200_until_a_mailboxs_last_success_is_too_old(served):
    metrics, clock, url, enabled = served

    # No cycle yet: healthy.
    status, body = get(url + "/health")
    assert (status, json.loads(body)["status"]) == (200, "ok")

    metrics.record_cycle(CycleReport(TAMARA, items=1), wait=0)
    clock.now += 3 * 3600  # exactly three sweep intervals: still fresh
    status, body = get(url + "/health")
    assert (status, json.loads(body)["status"]) == (200, "ok")

    clock.now += 1
    metrics.record_failure(TAMARA, TransientError("server busy"), wait=0)
    status, body = get(url + "/health")
    health = json.loads(body)
    assert (status, health["status"]) == (503, "degraded")
    assert health["mailboxes"][TAMARA]["ok"] is False
    assert health["mailboxes"][TAMARA]["last_error"] == "TransientError: server busy"
    assert health["mailboxes"][TAMARA]["last_success"] == clock.now - 3 * 3600 - 1

    metrics.record_cycle(CycleReport(TAMARA), wait=0)
    assert get(url + "/health")[0] == 200

    # A second mailbox whose first cycle failed makes it degraded.
    enabled.append("andy@contoso.com")
    metrics.record_failure("andy@contoso.com", ConfigError("no path"), wait=0)
    status, body = get(url + "/health")
    assert status == 503
    assert json.loads(body)["mailboxes"][TAMARA]["ok"] is True


def base(**service: object) -> dict[str, object]:
    return {
        "organisation": {"internal_domains": ["contoso.com"]},
        "service": service,
    }


def test_metrics_listen_on_loopback_unless_configured_otherwise():
    default = parse_config(base()).service
    assert (default.metrics_host, default.metrics_port) == ("127.0.0.1", 9464)
    assert parse_config(base(metrics_port=0)).service.metrics_port == 0
    assert parse_config(base(metrics_host="0.0.0.0")).service.metrics_host == (
        "0.0.0.0"
    )

    with pytest.raises(ConfigError, match=r"service\.metrics_port: .*65535"):
        parse_config(base(metrics_port=70000))
    with pytest.raises(ConfigError, match=r"service\.metrics_host: .*127\.0\.0\.1"):
        parse_config(base(metrics_host="http://0.0.0.0:9464"))


def test_metrics_port_0_serves_nothing():
    config = parse_config(base(metrics_port=0))
    assert Metrics().serve(lambda: config) is None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_running_service_is_scraped_after_its_first_cycle(tmp_path, running):  # noqa: F811
    url = sqlite_url(tmp_path / "ms.db")
    opened(url)  # the schema
    port = free_port()
    config = write_config(
        tmp_path / "ms.toml",
        url,
        {TAMARA: copy_contoso(tmp_path / "maildir")},
        metrics_port=port,
    )
    service = Running(config, tmp_path / "run.log")
    running.append(service)
    health: dict = {}

    def first_cycle() -> bool:
        nonlocal health
        try:
            status, body = get(f"http://127.0.0.1:{port}/health")
        except urllib.error.URLError:  # not listening yet
            return False
        health = json.loads(body)
        return health["mailboxes"][TAMARA]["last_cycle"] is not None

    wait_for("the first cycle, seen by /health", first_cycle)
    status, body = get(f"http://127.0.0.1:{port}/health")
    health = json.loads(body)
    assert (status, health["status"]) == (200, "ok")
    assert health["mailboxes"][TAMARA]["last_error"] is None
    _, scraped = get(f"http://127.0.0.1:{port}/metrics")
    assert value(scraped, "mailsync_items_synced_total", mailbox=TAMARA) == 38
    assert value(scraped, "mailsync_cycle_duration_seconds_count", mailbox=TAMARA) >= 1
    assert service.stop()[0] == 0


def test_a_throttled_check_counts_a_transient_error_and_its_wait(
    tmp_path,
    ews,  # noqa: F811
    monkeypatch,
):
    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    service = ews_service(sqlite_url(tmp_path / "ms.db"), ews, interval=0.3)
    sample = service.metrics.registry.get_sample_value
    kinds = {"mailbox": REP, "kind": "transient"}
    try:
        run_until_synced(service)
        assert sample("mailsync_errors_total", kinds) is None
        ews.reset_counts()
        ews.mailbox(REP).faults.server_busy(back_off_ms=2000, operation="GetEvents")
        run_for(service, 4.0)
        assert [c.status for c in calls_of(ews, REP)][:2] == [500, 200]
    finally:
        service.shutdown()

    # ErrorServerBusy once, then a check no sooner than 2 s (its
    # BackOffMilliseconds) after the refused one: at least 1.7 s later than
    # its 0.3 s interval would have had it. How much later depends on the
    # machine's load, so only the floor is exact.
    assert sample("mailsync_errors_total", kinds) == 1
    wait = sample("mailsync_throttle_wait_seconds_total", {"mailbox": REP})
    assert 1.65 <= wait < 4.0
    assert sample("mailsync_errors_total", {"mailbox": ANDY, "kind": "transient"}) is (
        None
    )
    # The other mailbox was not held back by that one's back-off.
    assert sample("mailsync_throttle_wait_seconds_total", {"mailbox": ANDY}) < 1.0


def test_the_metrics_port_is_closed_once_the_service_stopped(tmp_path):
    import signal
    import threading

    from mailsync.service import Service

    url = sqlite_url(tmp_path / "ms.db")
    port = free_port()
    config = parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "followups": {"enabled": False},
            "service": {"check_interval": 0.3, "metrics_port": port},
            "mailboxes": [
                {
                    "address": TAMARA,
                    "rep": "Tamara Johnston",
                    "kind": "local",
                    "path": str(copy_contoso(tmp_path / "maildir")),
                }
            ],
        }
    )
    service = Service(config, opened(url))

    def stop_once_served() -> None:
        wait_for("/health", lambda: _answers(f"http://127.0.0.1:{port}/health"))
        service.stop()  # what SIGTERM does; its watchdog is called off in time

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    threading.Thread(target=stop_once_served, daemon=True).start()
    try:
        assert service.run() == 0  # run() wants the main thread, for its signals
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert service.watchdog is None  # it would have ended pytest


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except urllib.error.URLError:
        return False
