"""An Exchange Web Services server over plain HTTP, for tests.

The simulator listens on 127.0.0.1 on an ephemeral port and answers the SOAP
operations that exchangelib sends for mailbox sync: ConvertId (exchangelib's
version probe), GetFolder, FindFolder, SyncFolderHierarchy, SyncFolderItems,
GetItem, ResolveNames, CreateItem, UpdateItem, MoveItem and DeleteItem, and
pull notifications: Subscribe, GetEvents and Unsubscribe. Every answer
carries ``ServerVersionInfo`` in the SOAP header, as Exchange's do. ``clock``
is the time every mailbox's subscriptions expire by (``clock.advance``).

    with EwsSimulator() as sim:
        sim.add_user("svc-mailsync", "secret")
        mailbox = sim.add_mailbox("tamara@contoso.com", "Tamara Johnston")
        mailbox.add(SimMessage(subject="Hello", author=Address("a@b.com")))
        ...  # point exchangelib at sim.url

It checks HTTP Basic credentials (HTTP 401 when they are wrong) and the
``ExchangeImpersonation`` header (``ErrorImpersonateUserDenied`` when the
user may not impersonate that mailbox). ``requests`` counts every request by
operation; ``calls`` lists them in order; ``errors`` keeps the traceback of
any bug in the simulator itself. Faults are armed on ``sim.faults`` or on one
mailbox's ``faults`` (see :mod:`tests.ews.faults`). Nothing here logs a
request's headers or credentials.

Where it differs from Exchange: see the "Known differences" notes in
:mod:`tests.ews.operations`.
"""

from __future__ import annotations

import base64
import binascii
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from xml.etree import ElementTree as ET

from tests.ews.faults import Fault, FaultKind, Faults
from tests.ews.mailbox import (
    Address,
    Attendee,
    IdFactory,
    MeetingKind,
    Occurrence,
    Recurrence,
    SimCalendarItem,
    SimClock,
    SimItem,
    SimMailbox,
    SimMeetingMessage,
    SimMessage,
    SimTask,
)
from tests.ews.operations import Operations, Request, SoapFault, busy_message
from tests.ews.render import ENS, SOAP, TNS, local, t
from tests.tls import TestCA
from tests.token_server import TokenServer

__all__ = [
    "Address",
    "Attendee",
    "Call",
    "EwsSimulator",
    "MeetingKind",
    "Occurrence",
    "Recurrence",
    "SimCalendarItem",
    "SimDirectory",
    "SimItem",
    "SimMailbox",
    "SimMeetingMessage",
    "SimMessage",
    "SimTask",
    "SimUser",
]

EWS_PATH = "/EWS/Exchange.asmx"

IIS_ERROR_PAGE = (
    "<html><head><title>Runtime Error</title></head><body>"
    "<h1>Server Error in '/EWS' Application.</h1>"
    "<h2><i>Runtime Error</i></h2></body></html>"
)


@dataclass
class SimUser:
    """An account that authenticates with HTTP Basic."""

    username: str
    password: str = field(repr=False)
    can_impersonate: bool = True


@dataclass(frozen=True)
class Call:
    """One request as the simulator saw it (never its headers)."""

    operation: str
    mailbox: str | None
    status: int


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    cut: bool = False


class SimDirectory:
    """The Global Address List: SMTP address, display name and X500 address."""

    def __init__(self) -> None:
        self._entries: list[tuple[Address, str]] = []

    def add(self, smtp: str, name: str, legacy_dn: str) -> Address:
        """Add a person; returns their X500 address (routing type EX)."""
        mailbox = Address(
            email=smtp, name=name, routing_type="SMTP", mailbox_type="Mailbox"
        )
        self._entries.append((mailbox, legacy_dn))
        return Address.x500(legacy_dn, name)

    def resolve(self, address: Address) -> Address | None:
        """The SMTP mailbox behind an X500 address, if the directory has it."""
        wanted = address.email.lower()
        for mailbox, legacy_dn in self._entries:
            if legacy_dn.lower() == wanted:
                return mailbox
        return None

    def lookup(self, text: str) -> list[Address]:
        """What ResolveNames finds for an unresolved entry."""
        query = text.strip()
        for prefix in ("smtp:", "ex:", "sip:"):
            if query.lower().startswith(prefix):
                query = query[len(prefix) :]
        lowered = query.lower()
        if lowered.startswith("/o="):
            found = self.resolve(Address.x500(query))
            return [found] if found else []
        if "@" in lowered:
            return [mb for mb, _ in self._entries if mb.email.lower() == lowered]
        return [
            mb
            for mb, _ in self._entries
            if mb.name.lower().startswith(lowered)
            or mb.email.lower().startswith(lowered)
        ]


class EwsSimulator:
    """The server: mailboxes by SMTP address, users, directory and faults."""

    def __init__(
        self,
        version: tuple[int, int, int, int] = (15, 1, 2507, 6),
        tls: TestCA | None = None,
    ) -> None:
        self.version = version
        self.tls = tls
        self.token_server: TokenServer | None = None
        self.apps: dict[str, SimUser] = {}
        self.lock = threading.RLock()
        self.mailboxes: dict[str, SimMailbox] = {}
        self.users: dict[str, SimUser] = {}
        self.directory = SimDirectory()
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.calls: list[Call] = []
        self.sent: list[SimItem] = []
        self.errors: list[str] = []
        self._ids = IdFactory()
        self.clock = SimClock()
        self._operations = Operations(self)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- set-up

    def add_user(
        self, username: str, password: str, *, can_impersonate: bool = True
    ) -> SimUser:
        user = SimUser(username, password, can_impersonate)
        self.users[username.lower()] = user
        return user

    def add_mailbox(self, smtp: str, name: str = "") -> SimMailbox:
        mailbox = SimMailbox(
            smtp, name, ids=self._ids, lock=self.lock, clock=self.clock
        )
        self.mailboxes[smtp.lower()] = mailbox
        self.directory.add(smtp, mailbox.name, mailbox.legacy_dn)
        return mailbox

    def add_app(
        self, token_server: TokenServer, client_id: str, *, can_impersonate: bool = True
    ) -> SimUser:
        """An app whose OAuth bearer tokens, from ``token_server``, sign it in."""
        self.token_server = token_server
        user = SimUser(f"app:{client_id}", "", can_impersonate)
        self.apps[client_id] = user
        return user

    def mailbox(self, smtp: str) -> SimMailbox:
        return self.mailboxes[smtp.lower()]

    def resolve(self, address: Address) -> Address | None:
        return self.directory.resolve(address)

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.calls.clear()

    # ---------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the simulator is not running")
        host, port = self._httpd.server_address[:2]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host!s}:{port}{EWS_PATH}"

    def start(self) -> Self:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        if self.tls is not None:
            httpd.socket = self.tls.server_context().wrap_socket(
                httpd.socket, server_side=True
            )
        httpd.sim = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="ews-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------- requests

    def _handle(self, path: str, headers: dict[str, str], data: bytes) -> _Reply:
        """The reply to one HTTP request. A bug in the simulator becomes an
        ``ErrorInternalServerError`` fault and is kept in ``errors``."""
        try:
            return self._reply(path, headers, data)
        except Exception as exc:
            self.errors.append(traceback.format_exc())
            bug = SoapFault("ErrorInternalServerError", f"EWS simulator bug: {exc!r}")
            return _fault_reply(bug)

    def _reply(self, path: str, headers: dict[str, str], data: bytes) -> _Reply:
        if path.split("?")[0].lower() != EWS_PATH.lower():
            return _Reply(404, b"Not Found", {"Content-Type": "text/plain"})
        try:
            envelope = ET.fromstring(data)
        except ET.ParseError:
            return _fault_reply(
                SoapFault("ErrorSchemaValidation", "The request is not XML.")
            )
        header, operation_elem = _soap_parts(envelope)
        operation = local(operation_elem) if operation_elem is not None else "(empty)"
        user = self._authenticate(headers.get("authorization", ""))
        if user is None:
            self._record(operation, None, 401)
            return _unauthorized()
        try:
            mailbox = self._target_mailbox(header, operation_elem, user, headers)
        except SoapFault as fault:
            self._record(operation, None, 500)
            return _fault_reply(fault)
        reply = self._answer(operation, operation_elem, header, user, mailbox)
        self._record(operation, mailbox.smtp if mailbox else None, reply.status)
        return reply

    def _answer(
        self,
        operation: str,
        element: ET.Element | None,
        header: ET.Element | None,
        user: SimUser,
        mailbox: SimMailbox | None,
    ) -> _Reply:
        fault = self.faults.take(operation)
        if fault is None and mailbox is not None:
            fault = mailbox.faults.take(operation)
        if fault is not None and fault.kind in (
            FaultKind.SERVER_BUSY,
            FaultKind.HTTP_ERROR,
        ):
            return self._fault_answer(operation, fault)
        try:
            _check_version(header)
            if element is None:
                raise SoapFault("ErrorSchemaValidation", "The SOAP body is empty.")
            body = self._operations.handle(Request(operation, element, user, mailbox))
        except SoapFault as soap_fault:
            return _fault_reply(soap_fault, self.version)
        reply = _Reply(200, _envelope(body, self.version), _XML_HEADERS.copy())
        if fault is not None:
            reply.delay = fault.seconds if fault.kind is FaultKind.SLOW else 0.0
            reply.cut = fault.kind is FaultKind.CUT
        return reply

    def _fault_answer(self, operation: str, fault: Fault) -> _Reply:
        if fault.kind is FaultKind.HTTP_ERROR:
            return _Reply(
                fault.status, IIS_ERROR_PAGE.encode(), {"Content-Type": "text/html"}
            )
        if fault.in_response:
            body = _envelope(busy_message(operation, fault.back_off_ms), self.version)
            return _Reply(200, body, _XML_HEADERS.copy())
        busy = SoapFault(
            "ErrorServerBusy",
            "The server cannot service this request right now. Try again later.",
            {"BackOffMilliseconds": str(fault.back_off_ms)},
        )
        return _fault_reply(busy)

    def _record(self, operation: str, mailbox: str | None, status: int) -> None:
        with self.lock:
            self.requests[operation] += 1
            self.calls.append(Call(operation, mailbox, status))

    # ------------------------------------------------------ who and whose

    def _authenticate(self, authorization: str) -> SimUser | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.token_server is not None:
            audience = self.url.removesuffix(EWS_PATH)
            client_id = self.token_server.holder(token.strip(), audience)
            return self.apps.get(client_id) if client_id else None
        if scheme.lower() != "basic":
            return None
        try:
            username, _, password = (
                base64.b64decode(token).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = self.users.get(username.lower())
        if user is None or user.password != password:
            return None
        return user

    def _target_mailbox(
        self,
        header: ET.Element | None,
        element: ET.Element | None,
        user: SimUser,
        headers: dict[str, str],
    ) -> SimMailbox | None:
        impersonated = _impersonated(header)
        if impersonated is not None:
            return self._impersonate(impersonated, user)
        named = _named_mailbox(element) or headers.get("x-anchormailbox")
        if named is None:
            named = self._owner_of_ids(element)
        if named is None:
            return self.mailboxes.get(user.username.lower())
        mailbox = self.mailboxes.get(named.lower())
        if mailbox is None:
            raise SoapFault(
                "ErrorNonExistentMailbox",
                "The SMTP address has no mailbox associated with it.",
            )
        owner = user.username.lower() == mailbox.smtp.lower()
        if not owner and user.username.lower() not in mailbox.delegates:
            raise SoapFault(
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            )
        return mailbox

    def _impersonate(self, smtp: str, user: SimUser) -> SimMailbox:
        mailbox = self.mailboxes.get(smtp.lower())
        if mailbox is None:
            raise SoapFault(
                "ErrorNonExistentMailbox",
                "The SMTP address has no mailbox associated with it.",
            )
        if not (user.can_impersonate and mailbox.allow_impersonation):
            raise SoapFault(
                "ErrorImpersonateUserDenied",
                "The account does not have permission to impersonate the requested "
                "user.",
            )
        return mailbox

    def _owner_of_ids(self, element: ET.Element | None) -> str | None:
        if element is None:
            return None
        for elem in element.iter():
            if local(elem) in ("ItemId", "FolderId"):
                for mailbox in self.mailboxes.values():
                    wanted = elem.get("Id", "")
                    if wanted in mailbox.items or wanted in mailbox.folders:
                        return mailbox.smtp
        return None


# ------------------------------------------------------------------ SOAP


_XML_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}

_API_VERSIONS = {
    "Exchange2007",
    "Exchange2007_SP1",
    "Exchange2010",
    "Exchange2010_SP1",
    "Exchange2010_SP2",
    "Exchange2013",
    "Exchange2013_SP1",
    "Exchange2015",
    "Exchange2016",
}


def _soap_parts(envelope: ET.Element) -> tuple[ET.Element | None, ET.Element | None]:
    header = envelope.find(f"{{{SOAP}}}Header")
    body = envelope.find(f"{{{SOAP}}}Body")
    operation = body[0] if body is not None and len(body) else None
    return header, operation


def _check_version(header: ET.Element | None) -> None:
    requested = (
        header.find(f"{{{TNS}}}RequestServerVersion") if header is not None else None
    )
    version = requested.get("Version", "") if requested is not None else "Exchange2007"
    if version not in _API_VERSIONS and not version.startswith("V20"):
        raise SoapFault(
            "ErrorInvalidServerVersion", "The specified server version is invalid."
        )


def _impersonated(header: ET.Element | None) -> str | None:
    if header is None:
        return None
    sid = header.find(f"{{{TNS}}}ExchangeImpersonation/{{{TNS}}}ConnectingSID")
    if sid is None:
        return None
    for child in sid:
        if (
            local(child) in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName")
            and child.text
        ):
            return child.text.strip()
    raise SoapFault(
        "ErrorImpersonateUserDenied", "The impersonation header names nobody."
    )


def _named_mailbox(element: ET.Element | None) -> str | None:
    if element is None:
        return None
    for elem in element.iter():
        if local(elem) == "DistinguishedFolderId":
            for address in elem.iter(f"{{{TNS}}}EmailAddress"):
                if address.text:
                    return address.text.strip()
    return None


def _version_header(version: tuple[int, int, int, int]) -> ET.Element:
    major, minor, build, revision = version
    header = ET.Element(f"{{{SOAP}}}Header")
    header.append(
        t(
            "ServerVersionInfo",
            MajorVersion=str(major),
            MinorVersion=str(minor),
            MajorBuildNumber=str(build),
            MinorBuildNumber=str(revision),
            Version="V2017_07_11",
        )
    )
    return header


def _envelope(body_content: ET.Element, version: tuple[int, int, int, int]) -> bytes:
    envelope = ET.Element(f"{{{SOAP}}}Envelope")
    envelope.append(_version_header(version))
    body = ET.SubElement(envelope, f"{{{SOAP}}}Body")
    body.append(body_content)
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)


def _fault_reply(
    fault: SoapFault, version: tuple[int, int, int, int] | None = None
) -> _Reply:
    """A SOAP fault with HTTP 500. Exchange sends header-level faults (such as
    throttling) without a SOAP header."""
    envelope = ET.Element(f"{{{SOAP}}}Envelope")
    if version is not None and fault.code not in ("ErrorServerBusy",):
        envelope.append(_version_header(version))
    body = ET.SubElement(envelope, f"{{{SOAP}}}Body")
    soap_fault = ET.SubElement(body, f"{{{SOAP}}}Fault")
    ET.SubElement(soap_fault, "faultcode").text = f"a:{fault.code}"
    faultstring = ET.SubElement(soap_fault, "faultstring")
    faultstring.text = fault.text
    faultstring.set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    detail = ET.SubElement(soap_fault, "detail")
    ET.SubElement(detail, f"{{{ENS}}}ResponseCode").text = fault.code
    ET.SubElement(detail, f"{{{ENS}}}Message").text = fault.text
    if fault.values:
        message_xml = ET.SubElement(detail, f"{{{TNS}}}MessageXml")
        for name, value in fault.values.items():
            message_xml.append(t("Value", value, Name=name))
    data = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
    data = data.replace(b"<faultcode>", f'<faultcode xmlns:a="{TNS}">'.encode(), 1)
    return _Reply(500, data, _XML_HEADERS.copy())


def _unauthorized() -> _Reply:
    headers = {
        "Content-Type": "text/html",
        "WWW-Authenticate": 'Basic realm="127.0.0.1"',
    }
    return _Reply(401, b"<html><body>401 - Unauthorized</body></html>", headers)


# ------------------------------------------------------------------ HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    sim: EwsSimulator

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up waiting (a timeout test) closed its end
        # before a slow answer was written: not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.sim._handle(self.path, headers, data)
        if reply.delay:
            time.sleep(reply.delay)
        self._send(reply)

    def do_GET(self) -> None:
        self._send(_Reply(405, b"Method Not Allowed", {"Content-Type": "text/plain"}))

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.cut:
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: requests are counted in ``EwsSimulator.requests``, not logged."""
