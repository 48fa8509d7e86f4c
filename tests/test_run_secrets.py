"""No secret, token or mail body in the log of a whole `mailsync run` at DEBUG.

One real service process syncs four mailboxes, each signing in its own way:
Exchange with Basic auth (``password_env``) and with OAuth
(``client_secret_file``), both over HTTPS with a private CA, and Microsoft
365 through Graph with a client secret (``client_secret_env``) and with a
certificate (``certificate_file``). It runs until every mailbox had its first
cycle, a check that found new mail and an idle check after that; then the
whole log is searched for every secret the run used or was handed.

The log must really be the DEBUG log of the libraries too, or the search
would prove nothing: msal's and urllib3's DEBUG lines are asserted present.
exchangelib's and requests_oauthlib's loggers are capped at INFO by
:mod:`mailsync.redact` (their DEBUG output is whole SOAP requests, mail
included), and at INFO they have nothing to say in a run that goes well, so
only that cap is asserted for them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.ews.simulator import EwsSimulator, SimMessage
from tests.graph.mailbox import Message
from tests.graph.simulator import GraphSimulator
from tests.graph.test_auth import app_certificate
from tests.test_service import (
    Running,
    opened,
    running,  # noqa: F401  (the fixture)
    sqlite_url,
    wait_for,
)
from tests.tls import TestCA
from tests.token_server import TokenServer

TENANT = "3a9d5c1e-7b2f-4e6a-8d40-5c1b9e7f2a63"
EWS_BASIC = "tamara@contoso.com"
EWS_OAUTH = "lee@contoso.com"
GRAPH_SECRET = "mia@contoso.com"
GRAPH_CERTIFICATE = "noah@contoso.com"
MAILBOXES = (EWS_BASIC, EWS_OAUTH, GRAPH_SECRET, GRAPH_CERTIFICATE)

SERVICE_USER = "svc-sync@contoso.com"
PASSWORD = "Pw-7f3Kq!basic-only-in-env"
EWS_CLIENT = "0c4e8a2d-6f1b-4d3c-9a57-e2b8c6d4f1a0"
EWS_SECRET = "Ews~9tQx.file-held-secret_R2d"
GRAPH_CLIENT = "9e2f6b3d-1a7c-4e5f-8b90-3d5a7c9e1f2b"
GRAPH_SECRET_VALUE = "Gr~4mZp.env-held-secret_W8k"
CERT_CLIENT = "4b8d2f6a-3c1e-4a9b-8e7d-6f2a4c8e0b1d"
PERMISSIONS = ("Mail.ReadWrite", "Calendars.ReadWrite", "Tasks.ReadWrite.All")
BODY = "Kumquat ledger for shelf"  # no log line may carry a mail body

LOG_LINE = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): ")


@dataclass
class Servers:
    ews: EwsSimulator
    graph: GraphSimulator
    tokens: TokenServer
    ca: TestCA
    certificate: Path


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Servers]:
    """Both simulators over HTTPS and one token endpoint for the three apps."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    ca = TestCA(tmp_path)
    certificate, cert_pem, _ = app_certificate(tmp_path / "app")
    with (
        TokenServer(ca, TENANT) as tokens,
        EwsSimulator(tls=ca) as ews,
        GraphSimulator(ca, tokens) as graph,
    ):
        ews.add_user(SERVICE_USER, PASSWORD)
        tokens.add_app(EWS_CLIENT, EWS_SECRET, f"{ews_origin(ews)}/.default")
        ews.add_app(tokens, EWS_CLIENT)
        tokens.add_app(GRAPH_CLIENT, GRAPH_SECRET_VALUE, f"{graph.url}/.default")
        tokens.add_certificate_app(CERT_CLIENT, cert_pem, f"{graph.url}/.default")
        for client in (GRAPH_CLIENT, CERT_CLIENT):
            graph.add_app(client, *PERMISSIONS)
        for address in (EWS_BASIC, EWS_OAUTH):
            ews.add_mailbox(address, address.split("@")[0].title())
        for address in (GRAPH_SECRET, GRAPH_CERTIFICATE):
            graph.add_mailbox(address, address.split("@")[0].title())
        yield Servers(ews, graph, tokens, ca, certificate)
    assert not ews.errors, "\n".join(ews.errors)
    assert not graph.errors, "\n".join(graph.errors)


def ews_origin(ews: EwsSimulator) -> str:
    return ews.url.removesuffix("/EWS/Exchange.asmx")


def mail(address: str, number: int) -> bytes:
    message = EmailMessage()
    message["From"] = "Andy Carothers <andy@tailspintoys.com>"
    message["To"] = address
    message["Subject"] = f"Order {number}"
    message["Message-ID"] = f"<order-{number}.{address}@tailspintoys.com>"
    when = datetime(2026, 11, 2, 9, 0, tzinfo=UTC) + timedelta(hours=number)
    message["Date"] = format_datetime(when)
    message.set_content(f"{BODY} {number}, please.\n")
    return bytes(message)


def deliver(servers: Servers, number: int) -> None:
    """One new message in every mailbox's Inbox."""
    for address in (EWS_BASIC, EWS_OAUTH):
        servers.ews.mailbox(address).add(
            SimMessage.from_mime(mail(address, number)), "inbox"
        )
    for address in (GRAPH_SECRET, GRAPH_CERTIFICATE):
        servers.graph.mailbox(address).add(Message.from_mime(mail(address, number)))


def write_config(path: Path, url: str, servers: Servers) -> Path:
    secret_file = path.parent / "ews-client-secret"
    secret_file.write_text(EWS_SECRET + "\n", encoding="utf-8")
    secret_file.chmod(0o600)
    ews = {"kind": "ews", "endpoint": servers.ews.url, "ca_bundle": str(servers.ca.pem)}
    graph = {
        "kind": "graph",
        "tenant_id": TENANT,
        "authority": servers.tokens.authority,
        "graph_url": servers.graph.url,
        "ca_bundle": str(servers.ca.pem),
    }
    boxes = [
        {
            **ews,
            "address": EWS_BASIC,
            "auth": "basic",
            "username": SERVICE_USER,
            "password_env": "MAILSYNC_TEST_RUN_PASSWORD",
        },
        {
            **ews,
            "address": EWS_OAUTH,
            "auth": "oauth",
            "tenant_id": TENANT,
            "client_id": EWS_CLIENT,
            "client_secret_file": str(secret_file),
            "authority": servers.tokens.authority,
        },
        {
            **graph,
            "address": GRAPH_SECRET,
            "client_id": GRAPH_CLIENT,
            "client_secret_env": "MAILSYNC_TEST_RUN_GRAPH_SECRET",
        },
        {
            **graph,
            "address": GRAPH_CERTIFICATE,
            "client_id": CERT_CLIENT,
            "certificate_file": str(servers.certificate),
        },
    ]
    lines = [
        f"[database]\nurl = {json.dumps(url)}\n",
        '[organisation]\ninternal_domains = ["contoso.com"]\n',
        "[followups]\nenabled = false\n",
        "[service]\ncheck_interval = 1\nmetrics_port = 0\n",
    ]
    for box in boxes:
        box["rep"] = box["address"]
        lines.append(
            "[[mailboxes]]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in box.items())
        )
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def cycles(text: str, address: str) -> list[int]:
    """The items read by each of the mailbox's cycles, from their lines."""
    pattern = rf"mailbox {re.escape(address)}: \d+ folders, (\d+) items,"
    return [int(m[1]) for m in re.finditer(pattern, text)]


def run_until_checked(service: Running, servers: Servers) -> None:
    """First cycles, then new mail found by a check, then an idle check."""

    def every_mailbox(since: int, wanted: Callable[[int], bool]) -> bool:
        text = service.text()[since:]
        return all(any(map(wanted, cycles(text, a))) for a in MAILBOXES)

    wait_for("the first cycles", lambda: every_mailbox(0, lambda n: n >= 2), 90)
    offset = len(service.text())
    deliver(servers, 3)
    wait_for("the new mail", lambda: every_mailbox(offset, lambda n: n == 1), 60)
    offset = len(service.text())
    wait_for("an idle check", lambda: every_mailbox(offset, lambda n: True), 30)


def secrets_of_the_run(servers: Servers) -> dict[str, str]:
    """Every value that must not be in the log, by what it is."""
    basic = base64.b64encode(f"{SERVICE_USER}:{PASSWORD}".encode()).decode()
    found = {
        "the Basic password": PASSWORD,
        "the Basic credentials": basic,
        "the EWS client secret": EWS_SECRET,
        "the Graph client secret": GRAPH_SECRET_VALUE,
    }
    for n, token in enumerate(servers.tokens.issued):
        found[f"access token {n}"] = token
    for n, assertion in enumerate(servers.tokens.assertions):
        found[f"client assertion {n}"] = assertion
        found[f"client assertion {n}'s signature"] = assertion.rsplit(".", 1)[1]
    pem = servers.certificate.read_text(encoding="utf-8")
    key = pem.split("-----BEGIN PRIVATE KEY-----")[1].split("-----END")[0]
    for n, line in enumerate(key.split()):
        found[f"private key line {n}"] = line
    return found


def test_a_debug_run_of_four_mailboxes_logs_no_secret_token_or_body(
    servers: Servers,
    tmp_path: Path,
    running: list[Running],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deliver(servers, 1)
    deliver(servers, 2)
    url = sqlite_url(tmp_path / "ms.db")
    opened(url)  # the schema
    config = write_config(tmp_path / "mailsync.toml", url, servers)
    monkeypatch.setenv("MAILSYNC_TEST_RUN_PASSWORD", PASSWORD)
    monkeypatch.setenv("MAILSYNC_TEST_RUN_GRAPH_SECRET", GRAPH_SECRET_VALUE)
    service = Running(config, tmp_path / "run.log", "--log-level", "DEBUG")
    running.append(service)

    run_until_checked(service, servers)
    code, _ = service.stop(timeout=20)
    log = service.text()

    assert code == 0, log[-3000:]
    assert "Traceback" not in log
    assert len(servers.tokens.issued) >= 3  # one app each: EWS, Graph, certificate
    assert servers.tokens.assertions, "the certificate app signed in"
    secrets = secrets_of_the_run(servers)
    assert [what for what, value in secrets.items() if value in log] == []
    assert BODY not in log  # mail bodies are personal data
    assert "<s:Envelope" not in log  # nor are whole requests, nor responses

    # The log really is a DEBUG log, the libraries' included.
    loggers = {m[2] for m in map(LOG_LINE.match, log.splitlines()) if m}
    levels = {m[1] for m in map(LOG_LINE.match, log.splitlines()) if m}
    assert "DEBUG" in levels
    assert {"mailsync.service", "urllib3.connectionpool"} <= loggers, loggers
    assert any(name.startswith("msal.") for name in loggers), loggers
    assert not re.search(r" DEBUG (exchangelib|requests_oauthlib)[\w.]*: ", log)
