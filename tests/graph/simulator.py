"""A Microsoft Graph server over HTTPS on loopback, for tests.

    with TokenServer(ca, TENANT) as tokens, GraphSimulator(ca, tokens) as sim:
        tokens.add_app(CLIENT_ID, SECRET, f"{sim.url}/.default")
        sim.add_app(CLIENT_ID, "Mail.ReadWrite", "Calendars.Read")
        box = sim.add_mailbox("tamara@contoso.com", "Tamara Johnston")
        box.add(Message.from_mime(raw), "inbox")
        ...  # point the connector at sim.url (graph_url) and tokens.authority

It serves the endpoints of :mod:`tests.graph.handlers` and ``POST
/v1.0/$batch`` (at most 20 requests, four of them run at a time, as Graph
hands a batch to Outlook). A request needs a bearer token that
``tokens`` issued for the simulator's URL as audience (else 401
``InvalidAuthenticationToken``), for an app given the application
permissions the endpoint needs (else 403 ``ErrorAccessDenied``). A
mailbox may be blocked for an app by an application access policy (403,
the ``[RAOP]`` message), be unknown (404 ``ErrorInvalidUser``) or still on
premises (404 ``MailboxNotEnabledForRESTAPI``).

Per mailbox it counts the requests in flight, the greatest number at any
moment (``max_in_flight``) and refuses a fifth (429, the MailboxConcurrency
error Outlook gives). ``requests`` counts HTTP requests by operation,
``batched`` the requests inside ``$batch`` calls, ``calls`` lists both in
order (a ``$batch`` after the requests in it, with their mailbox when they
have one). ``errors`` keeps the traceback of any bug in the simulator itself:
the test fixture fails a test that has one. ``latency`` delays every
answer, so that concurrent requests overlap. Nothing here logs a header,
a token or a body.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.graph.faults import Fault, FaultKind, Faults
from tests.graph.handlers import Handlers, Refusal, Reply, Req, encode_raw, match_route
from tests.graph.mailbox import Ids, Mailbox
from tests.tls import TestCA, serve_https
from tests.token_server import TokenServer

CONCURRENCY = 4  # Outlook's requests in flight per app and mailbox
BATCH_LIMIT = 20


@dataclass(frozen=True)
class Call:
    """One request as the simulator saw it (never its headers or body), and
    when it was answered (``time.time()``)."""

    operation: str
    mailbox: str | None
    status: int
    batched: bool = False
    at: float = field(default_factory=time.time, compare=False)


@dataclass
class _Answer:
    reply: Reply
    fault: Fault | None = None
    mailbox: str | None = None


@dataclass
class _Mailboxes:
    by_key: dict[str, Mailbox] = field(default_factory=dict)

    def find(self, key: str) -> Mailbox | None:
        return self.by_key.get(unquote(key).lower())


class GraphSimulator:
    def __init__(self, ca: TestCA, tokens: TokenServer) -> None:
        self.ca = ca
        self.tokens = tokens
        self.ids = Ids("graph-sim")
        self.mailboxes = _Mailboxes()
        self.apps: dict[str, set[str]] = {}
        self.faults = Faults()
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.batched: Counter[str] = Counter()
        self.calls: list[Call] = []
        self.errors: list[str] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.refused_concurrency = 0
        self.latency = 0.0
        self.handlers = Handlers(self)
        self._httpd: ThreadingHTTPServer | None = None
        self._pool = ThreadPoolExecutor(16, "graph-sim-batch")

    # --- set-up --------------------------------------------------------------

    def add_app(self, client_id: str, *permissions: str) -> None:
        """An app registration with these application permissions (roles)."""
        self.apps[client_id] = set(permissions)

    def add_mailbox(self, address: str, name: str = "", zone: str = "UTC") -> Mailbox:
        box = Mailbox(address, name, self.ids, zone)
        self.mailboxes.by_key[box.address] = box
        self.mailboxes.by_key[box.user_id.lower()] = box
        return box

    def mailbox(self, address: str) -> Mailbox:
        found = self.mailboxes.find(address)
        assert found is not None, f"no mailbox {address}"
        return found

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.batched.clear()
            self.calls.clear()
            self.max_in_flight.clear()
            self.refused_concurrency = 0

    # --- lifecycle -----------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the simulator is not running"
        host, port = self._httpd.server_address[:2]
        return f"https://{host!s}:{port}"

    def start(self) -> Self:
        httpd = serve_https(self.ca, _Handler, "graph-sim")
        httpd.sim = self  # type: ignore[attr-defined]
        self._httpd = httpd
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- answering -----------------------------------------------------------

    def answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> _Answer:
        """The answer to one HTTP request; a simulator bug becomes a 500."""
        try:
            return self._answer(method, target, headers, body)
        except Exception:
            self.errors.append(traceback.format_exc())
            bug = Refusal(500, "SimulatorBug", "the Graph simulator failed")
            return _Answer(Reply(500, bug.body()))

    def _answer(
        self, method: str, target: str, headers: dict[str, str], data: bytes
    ) -> _Answer:
        parts = urlsplit(target)
        path = parts.path
        if not path.startswith("/v1.0/"):
            return _Answer(
                Reply(404, Refusal(404, "BadRequest", "Invalid version.").body())
            )
        path = path[len("/v1.0") :]
        try:
            payload = json.loads(data) if data else None
        except ValueError:
            return _Answer(
                Reply(400, Refusal(400, "BadRequest", "Invalid JSON.").body())
            )
        req = Req(method, path, dict(parse_qsl(parts.query)), headers, payload)
        if method == "POST" and path == "/$batch":
            return self._batch(req)
        return self._one(req)

    def _one(self, req: Req) -> _Answer:
        found = match_route(req.method, req.path)
        operation = found[0].operation if found else "unknown"
        has_token = "$skiptoken" in req.query or "$deltatoken" in req.query
        fault = self.faults.take(
            "$batch" if req.path == "/$batch" else operation, has_token
        )
        if fault is not None and fault.kind is FaultKind.EXPIRE_TOKEN:
            self.tokens.expire_all()
        mailbox: Mailbox | None = None
        try:
            req.client_id = self._client(req)
            if found is None:
                raise Refusal(
                    400,
                    "BadRequest",
                    f"Resource not found for the segment '{req.path}'.",
                )
            route, params = found
            req.params = params
            mailbox = self._mailbox(req, route)
            reply = self._refused_by(fault) or self._run(route, req, mailbox)
        except Refusal as refusal:
            reply = Reply(refusal.status, refusal.body(), refusal.headers)
        self._record(operation, mailbox, reply.status, req.batched)
        return _Answer(reply, fault, mailbox.address if mailbox else None)

    def _client(self, req: Req) -> str:
        given = req.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        client = self.tokens.holder(token, self.url) if token else None
        if client is None or client not in self.apps:
            message = (
                "Access token is empty."
                if not token
                else "Access token has expired or is not yet valid."
            )
            raise Refusal(
                401,
                "InvalidAuthenticationToken",
                message,
                {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
            )
        return client

    def _mailbox(self, req: Req, route: Any) -> Mailbox:
        key = req.params.get("user", "")
        box = self.mailboxes.find(key)
        if box is None:
            raise Refusal(
                404,
                "ErrorInvalidUser",
                f"The requested user '{unquote(key)}' is invalid.",
            )
        if box.on_premises:
            raise Refusal(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted "
                "on-premise.",
            )
        if not (self.apps[req.client_id] & route.permissions):
            raise Refusal(
                403,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            )
        if route.policy and req.client_id in box.blocked_apps:
            raise Refusal(
                403,
                "ErrorAccessDenied",
                "Access to OData is disabled: [RAOP] : Blocked by tenant configured "
                "AppOnly AccessPolicy settings.",
            )
        req.mailbox = box
        return box

    def _run(self, route: Any, req: Req, box: Mailbox) -> Reply:
        with self.lock:
            self.in_flight[box.address] += 1
            now = self.in_flight[box.address]
            self.max_in_flight[box.address] = max(self.max_in_flight[box.address], now)
        try:
            if now > CONCURRENCY:
                with self.lock:
                    self.refused_concurrency += 1
                raise Refusal(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    {"Retry-After": "1"},
                )
            if self.latency:
                time.sleep(self.latency)
            return route.handler(self.handlers, req)
        finally:
            with self.lock:
                self.in_flight[box.address] -= 1

    def _refused_by(self, fault: Fault | None) -> Reply | None:
        if fault is None:
            return None
        retry = (
            {}
            if fault.retry_after is None
            else {"Retry-After": f"{fault.retry_after:g}"}
        )
        if fault.kind is FaultKind.THROTTLE:
            return Reply(
                429,
                Refusal(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                ).body(),
                retry,
            )
        if fault.kind is FaultKind.UNAVAILABLE:
            body = Refusal(503, "ServiceUnavailable", "Service Unavailable").body()
            return Reply(503, body, retry)
        if fault.kind is FaultKind.GONE:
            return Reply(
                410,
                Refusal(
                    410,
                    "SyncStateNotFound",
                    "The sync state was not found or has expired.",
                ).body(),
            )
        if fault.kind is FaultKind.EXPIRE_TOKEN:
            raise Refusal(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
                {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
            )
        if fault.kind is FaultKind.DELAY:
            time.sleep(fault.seconds)
        return None  # truncate and cut act on the connection

    # --- $batch --------------------------------------------------------------

    def _batch(self, req: Req) -> _Answer:
        fault = self.faults.take("$batch", False)
        with self.lock:
            self.requests["$batch"] += 1
        mailboxes: set[str | None] = set()
        try:
            req.client_id = self._client(req)
            reply = self._refused_by(fault) or self._run_batch(req, mailboxes)
        except Refusal as refusal:
            reply = Reply(refusal.status, refusal.body(), refusal.headers)
        # The batch is one mailbox's when all its requests are.
        mailbox = mailboxes.pop() if len(mailboxes) == 1 else None
        with self.lock:
            self.calls.append(Call("$batch", mailbox, reply.status))
        return _Answer(reply, fault, mailbox)

    def _run_batch(self, req: Req, mailboxes: set[str | None]) -> Reply:
        entries = (req.body or {}).get("requests")
        if not isinstance(entries, list) or not entries:
            raise Refusal(400, "BadRequest", "Invalid batch payload format.")
        if len(entries) > BATCH_LIMIT:
            raise Refusal(
                400, "BadRequest", "The number of requests in a batch exceeds 20."
            )
        auth = req.headers.get("authorization", "")
        # Graph hands a batch to Outlook four requests at a time.
        results: list[dict[str, Any]] = []
        for start in range(0, len(entries), CONCURRENCY):
            chunk = entries[start : start + CONCURRENCY]
            answered = self._pool.map(lambda e: self._sub(e, auth), chunk)
            for result, mailbox in answered:
                results.append(result)
                mailboxes.add(mailbox)
        return Reply(200, {"responses": results})

    def _sub(
        self, entry: dict[str, Any], auth: str
    ) -> tuple[dict[str, Any], str | None]:
        try:
            url = str(entry["url"])
            parts = urlsplit(url if url.startswith("/") else "/" + url)
            headers = {
                k.lower(): str(v) for k, v in (entry.get("headers") or {}).items()
            }
            headers["authorization"] = auth
            sub = Req(
                str(entry["method"]).upper(),
                parts.path,
                dict(parse_qsl(parts.query)),
                headers,
                entry.get("body"),
                batched=True,
            )
            answer = self._one(sub)
            reply, mailbox = answer.reply, answer.mailbox
        except Exception:
            self.errors.append(traceback.format_exc())
            reply = Reply(
                500, Refusal(500, "SimulatorBug", "batch entry failed").body()
            )
            mailbox = None
        body: Any = reply.body
        response_headers = {"Content-Type": reply.content_type, **reply.headers}
        if isinstance(body, bytes):
            body = encode_raw(body)
        result = {
            "id": str(entry.get("id")),
            "status": reply.status,
            "headers": response_headers,
            "body": body,
        }
        return result, mailbox

    def _record(
        self, operation: str, mailbox: Mailbox | None, status: int, batched: bool
    ) -> None:
        with self.lock:
            counter = self.batched if batched else self.requests
            counter[operation] += 1
            address = mailbox.address if mailbox else None
            self.calls.append(Call(operation, address, status, batched))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def sim(self) -> GraphSimulator:
        return self.server.sim  # type: ignore[attr-defined,no-any-return]

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.sim.answer(method, self.path, headers, data)
        self._send(answer)

    def _send(self, answer: _Answer) -> None:
        reply, fault = answer.reply, answer.fault
        if fault is not None and fault.kind is FaultKind.CUT:
            self._close()
            return
        if isinstance(reply.body, bytes):
            data = reply.body
        elif reply.body is None:
            data = b""
        else:
            data = json.dumps(reply.body).encode()
        truncated = fault is not None and fault.kind is FaultKind.TRUNCATE
        sent = data[: len(data) // 2] if truncated else data
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        promised = len(sent) if truncated and fault and fault.short else len(data)
        self.send_header("Content-Length", str(promised))
        self.send_header("request-id", "6bc0a761-534b-4850-875e-bf3adfed7f64")
        try:
            self.end_headers()
            self.wfile.write(sent)
        except OSError:  # the client went away (it timed out): nothing to say
            self.close_connection = True
            return
        if truncated:
            self.wfile.flush()
            self._close()

    def _close(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: requests carry tokens."""
