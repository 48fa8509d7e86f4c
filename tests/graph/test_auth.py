"""Signing in to Microsoft Graph: TLS with a private CA, client secrets and
certificates, expired tokens, and what the configuration refuses.

The token endpoint answers as Entra ID's v2.0 endpoint does (AADSTS7000215
for a wrong secret, AADSTS700027 for a certificate it does not know); the
simulator refuses an expired token with 401 InvalidAuthenticationToken.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import msal
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mailsync.config import parse_config
from mailsync.connectors import open_connector
from mailsync.connectors.graph import GraphConnector
from mailsync.connectors.graph_auth import read_credential
from mailsync.errors import ConfigError, UserError
from mailsync.items import FolderRole
from tests.contract import drain, message
from tests.graph.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    PERMISSIONS,
    REP,
    connect,
    settings,
)
from tests.graph.mailbox import Mailbox, Message
from tests.graph.simulator import GraphSimulator
from tests.tls import TestCA
from tests.token_server import TokenServer

CERT_CLIENT = "3d5f7b9c-1e2a-4b6c-8d0e-2f4a6c8e0b1d"


def inbox_of(connector: GraphConnector) -> Any:
    return next(f for f in connector.folders() if f.role is FolderRole.INBOX)


def test_the_ca_bundle_wins_over_the_environment(
    graph: GraphSimulator, rep_box: Mailbox, ca: TestCA
) -> None:
    rep_box.add(Message.from_mime(message(1)))
    connector, _ = connect(graph)  # REQUESTS_CA_BUNDLE names the system store
    assert len(drain(connector, inbox_of(connector), None)[0]) == 1


def test_a_server_the_ca_bundle_did_not_sign_is_not_trusted(
    graph: GraphSimulator, tokens: TokenServer, tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    other = TestCA(tmp_path / "other")
    with GraphSimulator(other, tokens) as elsewhere:
        scopes = (f"{graph.url}/.default", f"{elsewhere.url}/.default")
        tokens.add_app(CLIENT_ID, CLIENT_SECRET, *scopes)
        elsewhere.add_app(CLIENT_ID, *PERMISSIONS)
        elsewhere.add_mailbox(REP)
        connector, _ = connect(elsewhere, ca_bundle=str(graph.ca.pem))
        with pytest.raises(UserError, match="not trusted.*set ca_bundle"):
            connector.folders()
        mailbox = settings(elsewhere, ca_bundle=str(other.pem))
        # The token endpoint is signed by the first CA.
        with pytest.raises(UserError, match="token endpoint .* is not trusted"):
            GraphConnector(mailbox, read_credential(mailbox))
    assert not elsewhere.errors


def test_a_wrong_secret_is_a_user_error_that_names_the_fix(
    graph: GraphSimulator,
) -> None:
    connector, _ = connect(graph, secret="not the secret")
    with pytest.raises(
        UserError, match=r"invalid_client \(AADSTS7000215.*client secret"
    ):
        connector.folders()


def test_an_expired_token_is_renewed_once_without_failing_the_cycle(
    graph: GraphSimulator, rep_box: Mailbox, tokens: TokenServer
) -> None:
    for n in range(12):
        rep_box.add(Message.from_mime(message(n)))
    connector, waits = connect(graph)
    inbox = inbox_of(connector)
    asked = tokens.token_requests
    graph.faults.expire_token(operation="messages.delta")
    items = drain(connector, inbox, None)[0]
    assert len(items) == 12
    assert tokens.token_requests == asked + 1
    assert waits == []
    statuses = [c.status for c in graph.calls if c.operation == "messages.delta"]
    assert statuses == [401, 200, 200, 200]


def test_a_token_refused_twice_is_a_user_error(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph)
    inbox = inbox_of(connector)
    graph.apps.clear()  # the app registration is gone: every token is refused
    with pytest.raises(UserError, match="refused the app's token twice"):
        drain(connector, inbox, None)


def test_the_token_cache_stays_in_memory(graph: GraphSimulator) -> None:
    connector, _ = connect(graph)
    connector.folders()
    cache = connector.tokens._app.token_cache
    assert type(cache) is msal.TokenCache  # not a SerializableTokenCache
    assert "secret" not in repr(connector.tokens)


# --- certificates ------------------------------------------------------------


def app_certificate(directory: Path) -> tuple[Path, str, str]:
    """A self-signed RSA certificate for the app registration: the PEM file
    (key and certificate), the certificate alone, and its SHA-1 thumbprint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailsync app")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mailsync-app.pem"
    path.write_text(key_pem + cert_pem)
    path.chmod(0o600)
    return path, cert_pem, cert.fingerprint(hashes.SHA1()).hex().upper()


@pytest.mark.parametrize("with_thumbprint", [False, True], ids=["sha256", "sha1"])
def test_an_app_signs_in_with_its_certificate(
    graph: GraphSimulator,
    rep_box: Mailbox,
    tokens: TokenServer,
    tmp_path: Path,
    with_thumbprint: bool,
) -> None:
    path, cert_pem, thumbprint = app_certificate(tmp_path)
    tokens.add_certificate_app(CERT_CLIENT, cert_pem, f"{graph.url}/.default")
    graph.add_app(CERT_CLIENT, *PERMISSIONS)
    rep_box.add(Message.from_mime(message(1)))
    changes: dict[str, Any] = {
        "client_id": CERT_CLIENT,
        "client_secret_env": None,
        "certificate_file": str(path),
    }
    if with_thumbprint:
        changes["certificate_thumbprint"] = ":".join(
            thumbprint[i : i + 2] for i in range(0, 40, 2)
        )
    mailbox = settings(graph, **changes)
    connector = GraphConnector(mailbox, read_credential(mailbox))
    assert len(drain(connector, inbox_of(connector), None)[0]) == 1
    assert connector.check()[0].endswith(
        f"({'certificate'}) to tenant {mailbox.tenant_id}"
    )


def test_a_certificate_the_app_does_not_have_is_refused(
    graph: GraphSimulator, tokens: TokenServer, tmp_path: Path
) -> None:
    _, registered, _ = app_certificate(tmp_path / "registered")
    other, _, _ = app_certificate(tmp_path / "other")
    tokens.add_certificate_app(CERT_CLIENT, registered, f"{graph.url}/.default")
    graph.add_app(CERT_CLIENT, *PERMISSIONS)
    mailbox = settings(
        graph,
        client_id=CERT_CLIENT,
        client_secret_env=None,
        certificate_file=str(other),
    )
    connector = GraphConnector(mailbox, read_credential(mailbox))
    with pytest.raises(UserError, match="invalid_client.*AADSTS700027"):
        connector.folders()


def test_a_certificate_file_readable_by_others_is_refused(
    graph: GraphSimulator, tmp_path: Path
) -> None:
    path, _, _ = app_certificate(tmp_path)
    path.chmod(0o644)
    mailbox = settings(graph, client_secret_env=None, certificate_file=str(path))
    with pytest.raises(ConfigError, match="chmod 600"):
        read_credential(mailbox)


def test_a_certificate_file_without_its_key_is_refused(
    graph: GraphSimulator, tmp_path: Path
) -> None:
    _, cert_pem, _ = app_certificate(tmp_path)
    path = tmp_path / "cert-only.pem"
    path.write_text(cert_pem)
    path.chmod(0o600)
    mailbox = settings(graph, client_secret_env=None, certificate_file=str(path))
    with pytest.raises(
        ConfigError, match="must hold the private key and the certificate"
    ):
        read_credential(mailbox)


# --- configuration -----------------------------------------------------------


def graph_config(**mailbox: Any) -> dict[str, Any]:
    values = {
        "address": "tamara@contoso.com",
        "rep": "Tamara Johnston",
        "kind": "graph",
        "tenant_id": "2f6c1d3e-8a4b-4c5d-9e7f-0a1b2c3d4e5f",
        "client_id": CLIENT_ID,
        "client_secret_env": "MAILSYNC_GRAPH_SECRET",
    }
    values.update(mailbox)
    return {
        "organisation": {"internal_domains": ["contoso.com"]},
        "mailboxes": [{k: v for k, v in values.items() if v is not None}],
    }


def test_a_graph_mailbox_takes_the_defaults() -> None:
    (mailbox,) = parse_config(graph_config()).mailboxes
    assert mailbox.kind == "graph"
    assert (mailbox.authority, mailbox.graph_url) == (
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
    )
    assert mailbox.scope == "https://graph.microsoft.com/.default"
    assert (mailbox.backfill_days, mailbox.page_size) == (180, 100)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"tenant_id": None}, "mailboxes[0].tenant_id: required key is missing"),
        (
            {"client_secret_env": None},
            "exactly one of client_secret_env, client_secret_file or certificate_file",
        ),
        (
            {"certificate_file": "/etc/hosts"},
            "exactly one of client_secret_env, client_secret_file or "
            "certificate_file (given: client_secret_env, certificate_file)",
        ),
        ({"graph_url": "graph.microsoft.com"}, "mailboxes[0].graph_url: 'graph"),
        (
            {"certificate_thumbprint": "12AB"},
            "mailboxes[0].certificate_thumbprint: '12AB' is not a SHA-1 thumbprint",
        ),
        ({"page_size": 5000}, "mailboxes[0].page_size"),
        ({"ca_bundle": "/nowhere/ca.pem"}, "/nowhere/ca.pem is not a file"),
        ({"password_env": "X"}, "mailboxes[0].password_env: unknown key"),
    ],
)
def test_a_wrong_graph_setting_names_the_key_and_the_fix(
    changes: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        parse_config(graph_config(**changes))


def test_open_connector_reads_the_secret_named_by_the_config(
    graph: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = settings(graph, client_secret_env="MAILSYNC_TEST_GRAPH_UNSET")
    monkeypatch.delenv("MAILSYNC_TEST_GRAPH_UNSET", raising=False)
    with pytest.raises(ConfigError, match="MAILSYNC_TEST_GRAPH_UNSET is not set"):
        open_connector(mailbox)
    connector = open_connector(settings(graph))
    assert isinstance(connector, GraphConnector)
    connector.close()
