"""Leases: which service instance may sync a mailbox, kept in the database.

A lease names a mailbox (or other work for one instance at a time, whose
name starts with ``@``), its holder and when it expires. A holder renews
its leases while it works; one that dies stops renewing, and after the
time to live anyone may take them. Two instances on one database therefore
never sync one mailbox at the same time.

Taking a lease is one transaction: a conditional UPDATE of a free or
expired row, else an INSERT that does nothing when the row exists. On
PostgreSQL the UPDATE's condition is checked again once a concurrent
writer's row lock is released, and the INSERT waits for a concurrent
INSERT of the same name, so exactly one of two takers wins; on SQLite a
write transaction (BEGIN IMMEDIATE) excludes every other writer.

Expiry is judged by the taker's clock: the hosts of instances sharing a
database must keep their clocks in step (NTP) to well within the TTL.

A holder on this machine whose process is gone (kill -9, a crash) does not
have to expire: its id names the host, the process id namespace and the
process, so an instance started after it takes its leases at once. A
holder on another host, or in another container, is waited for.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from mailsync.store.db import transaction
from mailsync.store.models import Lease, now

log = logging.getLogger(__name__)

INSTANCE_PREFIX = "@instance:"
_TABLE: Table = Lease.__table__  # type: ignore[assignment]


def new_holder() -> str:
    """This process's holder id: ``host:pid:namespace:random``.

    The namespace is the process id namespace (Linux), so that two
    containers sharing a host name do not judge each other's processes;
    the random part tells apart holders of one process, or of a reused pid.
    """
    host, pid, tag = socket.gethostname(), os.getpid(), secrets.token_hex(4)
    return f"{host}:{pid}:{_pid_namespace()}:{tag}"


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def holder_is_gone(holder: str) -> bool:
    """Whether ``holder`` was a process of this machine that no longer runs.

    Only a holder of this host and process id namespace is judged, never
    one of this very process, and only where signal 0 can probe a process
    (POSIX; on Windows it would end it). Anything else counts as alive, to
    be waited for until its lease expires.
    """
    parts = holder.split(":")
    if os.name != "posix" or len(parts) != 4:
        return False
    host, pid, namespace, _tag = parts
    if (host, namespace) != (socket.gethostname(), _pid_namespace()):
        return False
    if not pid.isdigit() or int(pid) in (0, os.getpid()):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive
        return False
    return False


def acquire(factory: sessionmaker[Session], name: str, holder: str, ttl: float) -> bool:
    """Take the lease ``name`` for ``ttl`` seconds if it is free, expired or
    already ours; whether we hold it now."""
    with transaction(factory) as session:
        return _take(session, name, holder, ttl)


def _take(session: Session, name: str, holder: str, ttl: float) -> bool:
    moment = now()
    expires = moment + timedelta(seconds=ttl)
    # RETURNING says what was written (psycopg gives no rowcount here).
    connection = session.connection()
    taken = connection.execute(
        update(_TABLE)
        .where(
            _TABLE.c.name == name,
            or_(_TABLE.c.holder == holder, _TABLE.c.expires_at < moment),
        )
        .values(holder=holder, expires_at=expires, acquired_at=moment)
        .returning(_TABLE.c.name)
    )
    if taken.first() is not None:
        return True
    current = connection.execute(
        select(_TABLE.c.holder).where(_TABLE.c.name == name)
    ).scalar()
    if current is not None:
        return (
            current != holder
            and holder_is_gone(current)
            and _take_over(session, name, current, holder, expires, moment)
        )
    values = {
        "name": name,
        "holder": holder,
        "acquired_at": moment,
        "expires_at": expires,
    }
    insert = (
        postgresql.insert(_TABLE)
        if connection.dialect.name == "postgresql"
        else sqlite.insert(_TABLE)
    )
    inserted = connection.execute(
        insert.values(**values).on_conflict_do_nothing().returning(_TABLE.c.name)
    )
    return inserted.first() is not None


def _take_over(
    session: Session,
    name: str,
    dead: str,
    holder: str,
    expires: datetime,
    moment: datetime,
) -> bool:
    """Take ``name`` from a holder whose process is gone, if it still has it."""
    taken = session.connection().execute(
        update(_TABLE)
        .where(_TABLE.c.name == name, _TABLE.c.holder == dead)
        .values(holder=holder, expires_at=expires, acquired_at=moment)
        .returning(_TABLE.c.name)
    )
    if taken.first() is None:
        return False
    log.info("lease %s: its holder %s no longer runs; taken over", name, dead)
    return True


def renew(
    factory: sessionmaker[Session], names: Iterable[str], holder: str, ttl: float
) -> set[str]:
    """Extend our leases among ``names``; the names we still hold."""
    wanted = list(names)
    if not wanted:
        return set()
    expires = now() + timedelta(seconds=ttl)
    with transaction(factory) as session:
        session.execute(
            update(Lease)
            .where(Lease.name.in_(wanted), Lease.holder == holder)
            .values(expires_at=expires)
            .execution_options(synchronize_session=False)
        )
        held = session.scalars(
            select(Lease.name).where(Lease.name.in_(wanted), Lease.holder == holder)
        )
        return set(held)


def release(factory: sessionmaker[Session], names: Iterable[str], holder: str) -> None:
    """Give up our leases among ``names`` (another's are left alone)."""
    wanted = list(names)
    if not wanted:
        return
    with transaction(factory) as session:
        session.execute(
            delete(Lease)
            .where(Lease.name.in_(wanted), Lease.holder == holder)
            .execution_options(synchronize_session=False)
        )


def holders(session: Session) -> dict[str, tuple[str, datetime]]:
    """Every lease: name -> (holder, expires_at)."""
    rows = session.execute(select(Lease.name, Lease.holder, Lease.expires_at))
    return {name: (holder, expires) for name, holder, expires in rows}


def live_instances(factory: sessionmaker[Session], holder: str, ttl: float) -> int:
    """Announce this instance (a lease of its own, renewed each call) and
    count the instances alive on this database, this one included.

    Expired announcements, and those of this machine's processes that no
    longer run, are removed: instances that died.
    """
    mine = INSTANCE_PREFIX + holder
    moment = now()
    with transaction(factory) as session:
        session.execute(
            delete(Lease)
            .where(Lease.name.startswith(INSTANCE_PREFIX), Lease.expires_at < moment)
            .execution_options(synchronize_session=False)
        )
        announced = session.scalars(
            select(Lease.holder).where(
                Lease.name.startswith(INSTANCE_PREFIX), Lease.holder != holder
            )
        )
        gone = [INSTANCE_PREFIX + h for h in announced if holder_is_gone(h)]
        if gone:
            session.execute(
                delete(Lease)
                .where(Lease.name.in_(gone))
                .execution_options(synchronize_session=False)
            )
        _take(session, mine, holder, ttl)
        count = session.scalar(
            select(func.count())
            .select_from(Lease)
            .where(Lease.name.startswith(INSTANCE_PREFIX))
        )
    return max(int(count or 0), 1)


class Holding:
    """Leases taken for one command's run (``sync --once``), renewed by a
    thread every third of their time to live until released.

    ``lost(name)`` turns true when a renewal finds that another holder took
    the lease (this process stalled past the TTL); the work under it should
    then stop after the page in hand.
    """

    def __init__(self, factory: sessionmaker[Session], ttl: float) -> None:
        self.factory = factory
        self.ttl = ttl
        self.holder = new_holder()
        self.held: set[str] = set()
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, name: str) -> str | None:
        """Take ``name``; None when taken, else the holder that has it."""
        if acquire(self.factory, name, self.holder, self.ttl):
            with self._lock:
                self.held.add(name)
            self._start()
            return None
        with transaction(self.factory) as session:
            holder = holders(session).get(name)
        return holder[0] if holder else "another instance"

    def lost(self, name: str) -> bool:
        with self._lock:
            return name in self._lost

    def release(self, name: str) -> None:
        with self._lock:
            self.held.discard(name)
        release(self.factory, [name], self.holder)

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            names, self.held = list(self.held), set()
        try:
            release(self.factory, names, self.holder)
        except Exception as exc:  # they expire by themselves
            log.warning("leases not released: %s", exc)

    def __enter__(self) -> Holding:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._renew, name="lease-renewal", daemon=True
            )
            self._thread.start()

    def _renew(self) -> None:
        while not self._done.wait(self.ttl / 3):
            with self._lock:
                wanted = set(self.held)
            try:
                kept = renew(self.factory, wanted, self.holder, self.ttl)
            except Exception as exc:  # the database is away: try again
                log.warning("leases not renewed: %s", exc)
                continue
            with self._lock:
                for name in wanted - kept:
                    if name in self.held:
                        log.warning("lease %s: lost to another instance", name)
                        self._lost.add(name)
