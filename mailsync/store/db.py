"""The database: engine, sessions and schema upgrades (Alembic)."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailsync.errors import UserError
from mailsync.redact import remember

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


_SECRET_QUERY = re.compile(r"(?i)pass|secret|token|key")


def masked(url: str) -> str:
    """The URL with its password hidden (also one given as a query parameter)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<unreadable database URL>"
    if "@" in (parsed.host or ""):
        return "<database URL with an unescaped @ in its password>"
    hidden = {k: "***" for k in parsed.query if _SECRET_QUERY.search(k)}
    text = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return text.replace("%2A%2A%2A", "***")


def open_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode and enforced foreign keys.

    Statement parameters (mail subjects, previews) are kept out of error
    messages and logs, and the password is remembered for the log filter.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(
            f"database.url {masked(url)!r} is not a database URL; use "
            "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None
    if "@" in (parsed.host or ""):
        raise UserError(
            "database.url: the password holds an @; write it as %40 in the URL"
        )
    for value in [parsed.password, *parsed.query.values()]:
        if isinstance(value, str):
            remember(value)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed.render_as_string(hide_password=False))
        return create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise UserError(
            f"database.url {masked(url)!r}: no driver for it here ({exc}); use "
            "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None


def _sqlite_engine(url: str) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        _create_private_file(Path(path))
    engine = create_engine(url, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun by hand below, as BEGIN IMMEDIATE: a writer
        # then waits for another (busy_timeout) instead of failing at once
        # with "database is locked" when it upgrades a read lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (mail is personal data)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, stat.S_IRUSR | stat.S_IWUSR)
    os.close(fd)


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    with factory() as session, session.begin():
        yield session


def _alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on an empty database)."""
    try:
        command.upgrade(_alembic_config(engine), "head")
    except OperationalError as exc:
        raise UserError(
            f"cannot reach the database {masked(str(engine.url))}: {exc.orig}; "
            "check database.url"
        ) from None


def schema_state(engine: Engine) -> tuple[str | None, str]:
    """The schema revision in the database, and the newest one we know."""
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head or ""


def require_current(engine: Engine) -> None:
    """Refuse to work on a database whose schema is missing or old."""
    try:
        current, head = schema_state(engine)
    except OperationalError as exc:
        raise UserError(
            f"cannot reach the database {masked(str(engine.url))}: {exc.orig}; "
            "check database.url"
        ) from None
    if current is None:
        raise UserError("the database has no schema yet; run `mailsync init`")
    if current != head:
        raise UserError(
            f"the database schema is at {current}, this mailsync needs {head}; "
            "run `mailsync db upgrade`"
        )
