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
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from mailsync.store.db import transaction
from mailsync.store.models import Lease, now

INSTANCE_PREFIX = "@instance:"
_TABLE: Table = Lease.__table__  # type: ignore[assignment]


def new_holder() -> str:
    """This process's holder id: ``host:pid:random`` (random: a reused pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


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

    Expired announcements, of instances that died, are removed.
    """
    mine = INSTANCE_PREFIX + holder
    moment = now()
    with transaction(factory) as session:
        session.execute(
            delete(Lease)
            .where(Lease.name.startswith(INSTANCE_PREFIX), Lease.expires_at < moment)
            .execution_options(synchronize_session=False)
        )
        _take(session, mine, holder, ttl)
        count = session.scalar(
            select(func.count())
            .select_from(Lease)
            .where(Lease.name.startswith(INSTANCE_PREFIX))
        )
    return max(int(count or 0), 1)
