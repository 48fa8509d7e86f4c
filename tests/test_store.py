"""The database layer: migrations, SQLite settings, schema checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from mailsync.errors import UserError
from mailsync.store import db
from mailsync.store.models import Base


def test_migrations_build_exactly_the_models(store_url: str) -> None:
    engine = db.open_engine(store_url)
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection), Base.metadata
        )
    engine.dispose()
    assert differences == []


def test_upgrade_twice_is_harmless_and_reports_the_head(store_url: str) -> None:
    engine = db.open_engine(store_url)
    db.upgrade(engine)
    current, head = db.schema_state(engine)
    assert current == head and head
    db.require_current(engine)
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = db.open_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_sqlite_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "m.db"
    engine = db.open_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_sqlite_files_stay_private_under_an_open_umask(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    old = os.umask(0)  # a service manager that sets none
    try:
        engine = db.open_engine(f"sqlite:///{path}")
        db.upgrade(engine)
        with engine.connect():  # while open: -wal and -shm exist
            files = [path, path.with_name("m.db-wal"), path.with_name("m.db-shm")]
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        engine.dispose()
    finally:
        os.umask(old)
    assert modes == {"m.db": 0o600, "m.db-wal": 0o600, "m.db-shm": 0o600}


def test_a_database_without_schema_says_to_run_init(tmp_path: Path) -> None:
    engine = db.open_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(UserError, match="mailsync init"):
        db.require_current(engine)
    engine.dispose()


def test_bad_urls_and_passwords_are_never_shown() -> None:
    assert "s3cret" not in db.masked("postgresql://sync:s3cret@db.example/mailsync")
    with pytest.raises(UserError, match="not a database URL"):
        db.open_engine("no such thing")


def test_unreachable_server_is_a_user_error_naming_the_url() -> None:
    engine = db.open_engine("postgresql://nobody:pw@127.0.0.1:1/none")
    with pytest.raises(UserError, match=r"cannot reach the database .*127\.0\.0\.1"):
        db.upgrade(engine)
