"""Leases on both backends: one holder at a time, and expiry when it dies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy.orm import Session, sessionmaker

from mailsync import leases
from mailsync.store import db


def _factories(url: str, count: int) -> list[sessionmaker[Session]]:
    # Separate engines: separate connections, as two service instances have.
    return [db.sessions(db.open_engine(url)) for _ in range(count)]


def test_a_free_lease_is_taken_and_a_held_one_is_refused(store_url):
    factory = _factories(store_url, 1)[0]
    assert leases.acquire(factory, "tamara@contoso.com", "a", ttl=60)
    assert not leases.acquire(factory, "tamara@contoso.com", "b", ttl=60)
    # Taking one's own lease again renews it.
    assert leases.acquire(factory, "tamara@contoso.com", "a", ttl=60)
    assert leases.renew(factory, ["tamara@contoso.com"], "b", ttl=60) == set()
    assert leases.renew(factory, ["tamara@contoso.com"], "a", ttl=60) == {
        "tamara@contoso.com"
    }
    leases.release(factory, ["tamara@contoso.com"], "b")  # not b's: kept
    assert not leases.acquire(factory, "tamara@contoso.com", "b", ttl=60)
    leases.release(factory, ["tamara@contoso.com"], "a")
    assert leases.acquire(factory, "tamara@contoso.com", "b", ttl=60)


def test_the_lease_of_a_holder_that_stopped_renewing_expires(store_url):
    factory = _factories(store_url, 1)[0]
    assert leases.acquire(factory, "tamara@contoso.com", "dead", ttl=0.5)
    assert not leases.acquire(factory, "tamara@contoso.com", "alive", ttl=60)
    time.sleep(0.7)
    assert leases.acquire(factory, "tamara@contoso.com", "alive", ttl=60)
    # The dead holder, back, no longer holds it and cannot renew it.
    assert leases.renew(factory, ["tamara@contoso.com"], "dead", ttl=60) == set()
    with factory() as session:
        assert leases.holders(session)["tamara@contoso.com"][0] == "alive"


def _race(url: str, names: list[str], expire_first: bool) -> dict[str, list[str]]:
    """Two threads, each with its own engine, take the same leases at once."""
    factories = _factories(url, 2)
    if expire_first:
        for name in names:
            leases.acquire(factories[0], name, "dead", ttl=0.01)
        time.sleep(0.05)
    winners: dict[str, list[str]] = {name: [] for name in names}
    start = threading.Barrier(2)
    lock = threading.Lock()

    def contend(holder: str, factory: sessionmaker[Session]) -> None:
        for name in names:
            start.wait()
            if leases.acquire(factory, name, holder, ttl=60):
                with lock:
                    winners[name].append(holder)

    threads = [
        threading.Thread(target=contend, args=(f"h{i}", f))
        for i, f in enumerate(factories)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for factory in factories:
        factory.kw["bind"].dispose()
    return winners


def test_two_takers_of_a_new_lease_at_once_get_one_winner(store_url):
    names = [f"rep{i}@contoso.com" for i in range(40)]
    winners = _race(store_url, names, expire_first=False)
    assert all(len(w) == 1 for w in winners.values()), winners


def test_two_takers_of_an_expired_lease_at_once_get_one_winner(store_url):
    names = [f"rep{i}@contoso.com" for i in range(40)]
    winners = _race(store_url, names, expire_first=True)
    assert all(len(w) == 1 for w in winners.values()), winners


def test_instances_announce_themselves_and_the_dead_drop_out(store_url):
    factory = _factories(store_url, 1)[0]
    assert leases.live_instances(factory, "a", ttl=60) == 1
    assert leases.live_instances(factory, "b", ttl=0.3) == 2
    assert leases.live_instances(factory, "a", ttl=60) == 2
    time.sleep(0.5)  # b stopped announcing itself
    assert leases.live_instances(factory, "a", ttl=60) == 1
    with factory() as session:
        assert set(leases.holders(session)) == {leases.INSTANCE_PREFIX + "a"}


def test_a_holder_id_names_the_host_and_process():
    holder = leases.new_holder()
    host, pid, namespace, tag = holder.split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    if sys.platform == "linux":
        assert namespace == str(os.stat("/proc/self/ns/pid").st_ino)
    assert tag and holder != leases.new_holder()


def _holder_of(pid: int, host: str | None = None) -> str:
    """The holder id a process ``pid`` of this machine would have."""
    _host, _pid, namespace, _tag = leases.new_holder().split(":")
    return f"{host or _host}:{pid}:{namespace}:0badf00d"


def _gone_pid() -> int:
    """The pid of a process that ran here and was killed (kill -9)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process.kill()
    process.wait()
    return process.pid


@pytest.mark.skipif(os.name != "posix", reason="signal 0 probes processes on POSIX")
def test_the_lease_of_a_process_of_this_host_that_is_gone_is_taken_at_once(
    store_url,
):
    factory = _factories(store_url, 1)[0]
    dead = _holder_of(_gone_pid())
    assert leases.acquire(factory, "tamara@contoso.com", dead, ttl=600)
    assert leases.live_instances(factory, dead, ttl=600) == 1

    assert leases.acquire(factory, "tamara@contoso.com", "new", ttl=60)
    with factory() as session:
        held = leases.holders(session)
    assert held["tamara@contoso.com"][0] == "new"
    # Its announcement goes too: the share counts only the living.
    assert leases.live_instances(factory, "new", ttl=60) == 1


@pytest.mark.skipif(os.name != "posix", reason="signal 0 probes processes on POSIX")
def test_a_running_process_or_another_hosts_holder_is_waited_for(store_url):
    factory = _factories(store_url, 1)[0]
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holders = [
            _holder_of(alive.pid),  # still running
            _holder_of(_gone_pid(), host="other-host.contoso.com"),
            f"{socket.gethostname()}:{_gone_pid()}:1:0badf00d",  # another container
            leases.new_holder(),  # this very process, another holder
            f"{socket.gethostname()}:{_gone_pid()}:0badf00d",  # an older id
        ]
        for n, holder in enumerate(holders):
            assert leases.acquire(factory, f"rep{n}@contoso.com", holder, ttl=600)
            assert not leases.acquire(factory, f"rep{n}@contoso.com", "new", ttl=60)
    finally:
        alive.kill()
        alive.wait()
