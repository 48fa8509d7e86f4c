"""Fixtures for the Graph simulator: a running server, a token endpoint for
msal, an app registration and one rep's mailbox.

``graph`` fails the test if the simulator itself hit a bug while answering.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailsync.config import GraphMailbox
from mailsync.connectors.graph import GraphConnector
from mailsync.connectors.graph_auth import Credential
from mailsync.secrets import Secret
from tests.graph.mailbox import Mailbox
from tests.graph.simulator import GraphSimulator
from tests.tls import TestCA
from tests.token_server import TokenServer

TENANT = "2f6c1d3e-8a4b-4c5d-9e7f-0a1b2c3d4e5f"
CLIENT_ID = "7c9e1a3b-5d7f-4b2c-8e4a-6f1d3b5c7e9a"
CLIENT_SECRET = "Zq8~sample.graph-secret_4Lm2"
REP = "tamara@contoso.com"
PERMISSIONS = ("Mail.ReadWrite", "Calendars.ReadWrite", "Tasks.ReadWrite.All")
SECRET_ENV = "MAILSYNC_TEST_GRAPH_SECRET"


def system_bundle() -> str:
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/cert.pem"):
        if os.path.exists(path):
            return path
    import certifi

    return str(certifi.where())


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def tokens(ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    # requests honours HTTP(S)_PROXY; the servers are on this machine. And
    # what these machines set, which requests prefers to Session.verify:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", system_bundle())
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    with TokenServer(ca, TENANT) as server:
        yield server


@pytest.fixture
def graph(ca: TestCA, tokens: TokenServer) -> Iterator[GraphSimulator]:
    """A started simulator with the app registered and one rep's mailbox."""
    with GraphSimulator(ca, tokens) as sim:
        tokens.add_app(CLIENT_ID, CLIENT_SECRET, f"{sim.url}/.default")
        sim.add_app(CLIENT_ID, *PERMISSIONS)
        sim.add_mailbox(REP, "Tamara Johnston", zone="Europe/Berlin")
        yield sim
    assert not sim.errors, "the Graph simulator failed:\n" + "\n".join(sim.errors)


@pytest.fixture
def rep_box(graph: GraphSimulator) -> Mailbox:
    return graph.mailbox(REP)


def settings(
    sim: GraphSimulator, ca: TestCA | None = None, **changes: Any
) -> GraphMailbox:
    values: dict[str, Any] = {
        "address": REP,
        "rep": "Tamara Johnston",
        "kind": "graph",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret_env": SECRET_ENV,
        "authority": sim.tokens.authority,
        "graph_url": sim.url,
        "ca_bundle": str((ca or sim.ca).pem),
        "page_size": 5,
        "max_retry_wait": 30.0,
    }
    values.update(changes)
    return GraphMailbox.model_validate(values)


def connect(
    sim: GraphSimulator, secret: str = CLIENT_SECRET, **changes: Any
) -> tuple[GraphConnector, list[float]]:
    waits: list[float] = []
    connector = GraphConnector(
        settings(sim, **changes),
        Credential(secret=Secret(secret, "test")),
        sleep=waits.append,
    )
    return connector, waits
