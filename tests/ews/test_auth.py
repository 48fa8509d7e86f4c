"""Signing in to EWS: TLS with a private CA, and OAuth client credentials.

The simulator serves HTTPS with a certificate from a test CA that neither the
system store nor ``REQUESTS_CA_BUNDLE`` knows. The token endpoint is a second
HTTPS server that msal talks to; the simulator accepts only the bearer tokens
it handed out, for the simulator's own URL as audience.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchangelib.protocol import close_connections
from pydantic import ValidationError

from mailsync.config import EwsMailbox
from mailsync.connectors.ews import EwsConnector
from mailsync.errors import TransientError, UserError
from mailsync.redact import install
from mailsync.secrets import Secret
from tests.contract import message
from tests.ews.conftest import REP, SERVICE_PASSWORD, SERVICE_USER
from tests.ews.simulator import EwsSimulator, SimMessage
from tests.tls import TestCA
from tests.token_server import TokenServer

TENANT = "8f3e2a4c-6b1d-4e7a-9c55-0d2f1e3b7a90"
CLIENT_ID = "5b7d9e1f-2a3c-4d5e-8f90-1a2b3c4d5e6f"
CLIENT_SECRET = "Q8x~k2Lm.v9Rt4Wz-sample-secret"


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    close_connections()


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def tls_ews(ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> Iterator[EwsSimulator]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # What these machines set: requests would prefer it to Session.verify.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", _system_bundle())
    with EwsSimulator(tls=ca) as sim:
        sim.add_user(SERVICE_USER, SERVICE_PASSWORD)
        mailbox = sim.add_mailbox(REP, "Tamara Johnston")
        for n in range(3):
            mailbox.add(SimMessage.from_mime(message(n)), "inbox")
        yield sim
    assert not sim.errors, "\n".join(sim.errors)


@pytest.fixture
def tokens(ca: TestCA, tls_ews: EwsSimulator) -> Iterator[TokenServer]:
    with TokenServer(ca, TENANT) as server:
        audience = tls_ews.url.removesuffix("/EWS/Exchange.asmx")
        server.add_app(CLIENT_ID, CLIENT_SECRET, f"{audience}/.default")
        tls_ews.add_app(server, CLIENT_ID)
        yield server


def _system_bundle() -> str:
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/cert.pem"):
        if os.path.exists(path):
            return path
    import certifi

    return str(certifi.where())


def settings(sim: EwsSimulator, **changes: Any) -> EwsMailbox:
    values: dict[str, Any] = {
        "address": REP,
        "rep": "Tamara Johnston",
        "kind": "ews",
        "endpoint": sim.url,
        "username": SERVICE_USER,
        "auth": "basic",
        "password_env": "UNUSED",
        "max_retry_wait": 0.0,
        "retries": 1,
    }
    values.update(changes)
    return EwsMailbox.model_validate({k: v for k, v in values.items() if v is not None})


def oauth_settings(sim: EwsSimulator, tokens: TokenServer, ca: TestCA) -> EwsMailbox:
    return settings(
        sim,
        auth="oauth",
        username=None,
        password_env=None,
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        client_secret_env="UNUSED",
        authority=tokens.authority,
        ca_bundle=str(ca.pem),
    )


def inbox_items(connector: EwsConnector) -> list[Any]:
    inbox = next(f for f in connector.folders() if f.name == "Inbox")
    return [i for b in connector.changes(inbox, None) for i in b.items]


# --- TLS -------------------------------------------------------------------


def test_the_ca_bundle_wins_over_the_environment(
    tls_ews: EwsSimulator, ca: TestCA
) -> None:
    assert tls_ews.url.startswith("https://")
    mailbox = settings(tls_ews, ca_bundle=str(ca.pem))
    connector = EwsConnector(mailbox, Secret(SERVICE_PASSWORD, "test"))
    assert len(inbox_items(connector)) == 3


def test_an_untrusted_certificate_says_to_set_ca_bundle(
    tls_ews: EwsSimulator,
) -> None:
    with pytest.raises(UserError, match="ca_bundle") as caught:
        connector = EwsConnector(settings(tls_ews), Secret(SERVICE_PASSWORD, "test"))
        connector.folders()
    assert tls_ews.requests.total() == 0  # refused before any request got through
    assert "certificate" in str(caught.value)


def test_a_missing_ca_bundle_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="is not a file; give the PEM file"):
        EwsMailbox.model_validate(
            {
                "address": REP,
                "rep": "Tamara Johnston",
                "kind": "ews",
                "endpoint": "https://mail.contoso.com/EWS/Exchange.asmx",
                "username": SERVICE_USER,
                "password_env": "X",
                "ca_bundle": str(tmp_path / "missing.pem"),
            }
        )


# --- OAuth -----------------------------------------------------------------


def test_oauth_signs_in_with_a_token_from_msal(
    tls_ews: EwsSimulator, tokens: TokenServer, ca: TestCA
) -> None:
    connector = EwsConnector(
        oauth_settings(tls_ews, tokens, ca), Secret(CLIENT_SECRET, "test")
    )
    assert len(inbox_items(connector)) == 3
    assert len(inbox_items(connector)) == 3
    # msal keeps the token in memory: one token request for every EWS call.
    assert tokens.token_requests == 1
    assert tls_ews.requests["SyncFolderItems"] >= 2
    assert {c.status for c in tls_ews.calls} == {200}


def test_a_token_the_server_stops_accepting_is_renewed_once(
    tls_ews: EwsSimulator, tokens: TokenServer, ca: TestCA
) -> None:
    connector = EwsConnector(
        oauth_settings(tls_ews, tokens, ca), Secret(CLIENT_SECRET, "test")
    )
    connector.folders()
    tokens.expire_all()
    assert len(inbox_items(connector)) == 3
    assert tokens.token_requests == 2
    assert [c.status for c in tls_ews.calls].count(401) == 1


def test_a_wrong_client_secret_is_named(
    tls_ews: EwsSimulator, tokens: TokenServer, ca: TestCA
) -> None:
    with pytest.raises(UserError) as caught:
        EwsConnector(oauth_settings(tls_ews, tokens, ca), Secret("wrong", "test"))
    text = str(caught.value)
    assert "invalid_client" in text and "AADSTS7000215" in text
    assert "client secret" in text and "wrong" not in text.split(":", 1)[0]
    assert tls_ews.requests.total() == 0


def test_an_app_without_the_ews_scope_is_told_to_check_oauth_scope(
    tls_ews: EwsSimulator, tokens: TokenServer, ca: TestCA
) -> None:
    tokens.apps[CLIENT_ID].scopes = ("https://graph.microsoft.com/.default",)
    with pytest.raises(UserError, match="invalid_scope.*oauth_scope"):
        EwsConnector(oauth_settings(tls_ews, tokens, ca), Secret(CLIENT_SECRET, "t"))


def test_an_app_that_may_not_impersonate_gets_the_role_to_grant(
    tls_ews: EwsSimulator, tokens: TokenServer, ca: TestCA
) -> None:
    tls_ews.apps[CLIENT_ID].can_impersonate = False
    connector = EwsConnector(
        oauth_settings(tls_ews, tokens, ca), Secret(CLIENT_SECRET, "test")
    )
    with pytest.raises(UserError, match="ApplicationImpersonation") as caught:
        connector.folders()
    assert f"app {CLIENT_ID} may not impersonate {REP}" in str(caught.value)


def test_no_token_or_secret_reaches_a_debug_log(
    tls_ews: EwsSimulator,
    tokens: TokenServer,
    ca: TestCA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    install(logging.DEBUG)
    with caplog.at_level(logging.DEBUG):
        connector = EwsConnector(
            oauth_settings(tls_ews, tokens, ca), Secret(CLIENT_SECRET, "test")
        )
        inbox_items(connector)
    issued = list(tokens.issued)
    assert issued
    text = "\n".join(
        logging.Formatter("%(name)s %(message)s").format(r) for r in caplog.records
    )
    assert "exchangelib" in text or "msal" in text
    for token in issued:
        assert token not in text
    assert CLIENT_SECRET not in text


@pytest.mark.parametrize(
    ("changes", "fix"),
    [
        ({"tenant_id": None}, "needs tenant_id"),
        ({"client_secret_env": None}, "needs client_secret_env or client_secret_file"),
        ({"access": "delegate"}, 'set access = "impersonation"'),
        ({"password_env": "P"}, "not a password"),
        ({"autodiscover": True}, "either endpoint"),
    ],
)
def test_oauth_settings_that_cannot_work_are_refused(
    changes: dict[str, Any], fix: str
) -> None:
    values: dict[str, Any] = {
        "address": REP,
        "rep": "Tamara Johnston",
        "kind": "ews",
        "endpoint": "https://mail.contoso.com/EWS/Exchange.asmx",
        "auth": "oauth",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret_env": "S",
    }
    values.update(changes)
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(ValidationError, match=fix):
        EwsMailbox.model_validate(values)


def test_the_default_scope_is_the_ews_servers_own() -> None:
    mailbox = EwsMailbox.model_validate(
        {
            "address": REP,
            "rep": "Tamara Johnston",
            "kind": "ews",
            "endpoint": "https://mail.contoso.com/EWS/Exchange.asmx",
            "auth": "oauth",
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret_file": "/etc/mailsync/secret",
        }
    )
    assert mailbox.scope == "https://mail.contoso.com/.default"
    assert mailbox.service_account == f"app {CLIENT_ID}"


def test_a_server_that_cannot_be_reached_is_named_not_a_bug() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}/EWS/Exchange.asmx"
    mailbox = EwsMailbox.model_validate(
        {
            "address": REP,
            "rep": "Tamara Johnston",
            "kind": "ews",
            "endpoint": endpoint,
            "username": SERVICE_USER,
            "auth": "basic",
            "password_env": "UNUSED",
            "retries": 2,
        }
    )
    waits: list[float] = []
    with pytest.raises(TransientError) as caught:
        connector = EwsConnector(
            mailbox, Secret(SERVICE_PASSWORD, "t"), sleep=waits.append
        )
        connector.folders()
    assert f"cannot reach the EWS server at {endpoint}" in str(caught.value)
    assert "check endpoint" in str(caught.value)
    assert waits == [1.0, 2.0]  # retried with back-off first
