"""Shared fixtures: a real database (SQLite file, and PostgreSQL where reachable).

``store_url`` runs each test that uses it twice: on a SQLite file and on the
PostgreSQL server at $MAILSYNC_TEST_PG (default 127.0.0.1:5432, database
``test``). Where PostgreSQL is unreachable the PostgreSQL run is skipped, except
under CI (CI=true), where it fails: CI must prove both.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from mailsync.config import Config, parse_config
from mailsync.store import db

PROJECT = Path(__file__).resolve().parent.parent
CONTOSO = PROJECT / "examples" / "contoso"
SHARED = PROJECT.parent / "shared"
ENRON = SHARED / "corpus" / "enron-maildir-13k" / "maildir"
PG_URL = os.environ.get(
    "MAILSYNC_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # any failure to connect means: not here
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    problem = _pg_available()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must be reachable in CI at {PG_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")
    name = f"mailsync_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database with the current schema, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mailsync.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    engine = db.open_engine(url)
    db.upgrade(engine)
    engine.dispose()
    yield url


@pytest.fixture
def factory(store_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.open_engine(store_url)
    yield db.sessions(engine)
    engine.dispose()


def contoso_config(url: str, maildir: Path, **linking: Any) -> Config:
    """The Contoso configuration on a given database and copy of the maildir."""
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "linking": linking,
            "mailboxes": [
                {
                    "address": "tamara@contoso.com",
                    "rep": "Tamara Johnston",
                    "kind": "local",
                    "path": str(maildir),
                }
            ],
        }
    )


@pytest.fixture
def contoso_maildir(tmp_path: Path) -> Path:
    """A private copy of the sample maildir, which a test may change."""
    target = tmp_path / "maildir"
    shutil.copytree(CONTOSO / "maildir", target)
    return target


needs_corpus = pytest.mark.skipif(
    not ENRON.is_dir(), reason="../shared/corpus is absent"
)
