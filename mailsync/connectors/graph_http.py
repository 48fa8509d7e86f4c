"""HTTP for the Microsoft Graph connector: one mailbox's requests, retried.

:class:`GraphClient` sends JSON requests to ``<graph_url>/v1.0`` with the
app's bearer token, and ``$batch`` calls of at most 20 requests. It does
what Graph's throttling guidance asks:

- At most :data:`MAILBOX_CONCURRENCY` (4) requests run at once per mailbox
  (Outlook's limit per app and mailbox), counted across every client of
  that mailbox in this process. Graph sends the Outlook service up to four
  requests of a ``$batch`` at a time, so a batch takes up to four slots.
- A 429 or 503 (``ApplicationThrottled``, the MailboxConcurrency errors too)
  waits the Retry-After the server gives, or 1, 2, 4 ... seconds where it
  gives none, up to ``max_retry_wait``; so do a 500, 502 or 504, a dropped
  connection and a page cut short. Inside a ``$batch`` only the refused
  requests are sent again. After ``retries`` attempts it is a
  :class:`~mailsync.errors.TransientError`.
- A 401 (``InvalidAuthenticationToken``: the token expired or was revoked
  early) asks msal for a new token once, and tries again.
- Every other error is a :class:`GraphError` with Graph's code and message,
  for the connector to turn into advice.

:meth:`GraphClient.create` (a POST that makes an item) is retried only
after a 429 or a 503, which Graph sends before it does anything. After a
timeout, a dropped connection or a 500, 502 or 504 the item may exist, and
:class:`~mailsync.connectors.base.DeliveryUncertain` says so instead of
making a second one.

A link the server gives (``@odata.nextLink``, ``@odata.deltaLink``) is only
followed on the configured Graph host: the bearer token goes nowhere else.
Nothing here logs a token, a query string or a body.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from mailsync.connectors.base import DeliveryUncertain
from mailsync.connectors.graph_auth import GraphTokens
from mailsync.connectors.trust import PinnedSession
from mailsync.errors import TransientError, UserError

log = logging.getLogger(__name__)

MAILBOX_CONCURRENCY = 4
BATCH_LIMIT = 20  # requests in one $batch, Graph's limit
TIMEOUT = (10.0, 120.0)  # connect, read
_RETRIED = {429, 500, 502, 503, 504}
_REFUSED_UNREAD = {429, 503}  # Graph did nothing: a create may be sent again
# A dropped connection, a timeout, a body cut short.
_BROKEN = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class GraphError(Exception):
    """A request that Graph refused: its HTTP status, code and message."""

    def __init__(self, status: int, code: str, message: str, operation: str) -> None:
        super().__init__(f"{operation}: HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.operation = operation

    @property
    def access_policy(self) -> bool:
        """Refused by an Exchange application access policy (RBAC for apps)."""
        text = self.message.lower()
        return self.status == 403 and ("accesspolicy" in text or "[raop]" in text)


@dataclass
class Answer:
    """One request's answer inside a ``$batch``."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self, operation: str) -> GraphError:
        code, message = _error_of(self.body)
        return GraphError(self.status, code, message, operation)

    def raw(self) -> bytes:
        """A non-JSON body (``$value``): Graph sends it base64-encoded."""
        if isinstance(self.body, str):
            return base64.b64decode(self.body)
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class Request:
    """One request of a ``$batch``: a path under ``/v1.0`` and what to send."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


class _Slots:
    """Requests in flight for one mailbox, never more than the limit."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._free = threading.Condition()

    def take(self, count: int) -> None:
        with self._free:
            self._free.wait_for(lambda: self.used + count <= self.limit)
            self.used += count

    def give(self, count: int) -> None:
        with self._free:
            self.used -= count
            self._free.notify_all()


_slots: dict[str, _Slots] = {}
_slots_lock = threading.Lock()


def slots_for(mailbox: str) -> _Slots:
    with _slots_lock:
        return _slots.setdefault(mailbox.lower(), _Slots(MAILBOX_CONCURRENCY))


class GraphClient:
    def __init__(
        self,
        *,
        address: str,
        graph_url: str,
        tokens: GraphTokens,
        ca_bundle: Any,
        retries: int,
        max_retry_wait: float,
        sleep: Callable[[float], None] = time.sleep,
        timeout: tuple[float, float] = TIMEOUT,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.root = f"{graph_url.rstrip('/')}/v1.0"
        self.user = f"/users/{quote(address, safe='@')}"
        self.tokens = tokens
        self.retries, self.max_retry_wait = retries, max_retry_wait
        self.sleep = sleep
        self.slots = slots_for(address)
        self.session = PinnedSession(ca_bundle)
        adapter = HTTPAdapter(pool_maxsize=MAILBOX_CONCURRENCY * 2)
        self.session.mount("https://", adapter)
        self._origin = _origin(self.root)

    def close(self) -> None:
        self.session.close()

    # --- single requests ---------------------------------------------------

    def get(
        self, url: str, operation: str, headers: Mapping[str, str] | None = None
    ) -> Any:
        """GET a path under ``/v1.0`` (or a link the server gave) as JSON."""
        return self.send("GET", url, operation, headers=headers)

    def send(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        only_unread: bool = False,
    ) -> Any:
        """One request, renewing an expired token once and sending it again
        after a temporary failure; with ``only_unread``, only after one
        Graph refused unread (429, 503): another may have done the work, and
        raises DeliveryUncertain."""
        full = self._absolute(url)
        attempt, renewed = 0, False
        while True:
            try:
                return self._once(method, full, operation, headers, body)
            except _Expired:
                if renewed:
                    raise UserError(self._refused_token()) from None
                renewed = True
                self.tokens.token(force=True)
            except _Temporary as exc:
                if only_unread and exc.status not in _REFUSED_UNREAD:
                    raise DeliveryUncertain(
                        f"mailbox {self.address}: {operation} got no answer "
                        f"({exc.why}); it may have been made"
                    ) from exc
                attempt += 1
                self._wait(operation, exc.why, exc.retry_after, attempt)

    def create(
        self,
        url: str,
        operation: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """POST that makes an item, sent again only when Graph refused it
        unread (429, 503); a request that may have made it raises
        DeliveryUncertain."""
        return self.send(
            "POST", url, operation, headers=headers, body=body, only_unread=True
        )

    def _once(
        self,
        method: str,
        url: str,
        operation: str,
        headers: Mapping[str, str] | None,
        body: Any,
    ) -> Any:
        sent = {
            "Authorization": f"Bearer {self.tokens.token()}",
            "Accept": "application/json",
            **(headers or {}),
        }
        log.debug("mailbox %s: %s %s", self.address, method, urlsplit(url).path)
        self.slots.take(1)
        try:
            response = self.session.request(
                method, url, headers=sent, json=body, timeout=self.timeout
            )
            data = response.content  # read it all while the slot is held
        except requests.exceptions.SSLError:
            raise UserError(self._untrusted()) from None
        except _BROKEN as exc:
            raise _Temporary(type(exc).__name__) from exc
        finally:
            self.slots.give(1)
        return _decode(response, data, operation)

    # --- $batch ------------------------------------------------------------

    def batch(self, requests_: Sequence[Request], operation: str) -> list[Answer]:
        """Send the requests in ``$batch`` calls of at most 20; the answers in
        order. A refused request is retried as a lone request would be."""
        answers: list[Answer] = []
        for start in range(0, len(requests_), BATCH_LIMIT):
            answers.extend(
                self._batch_chunk(requests_[start : start + BATCH_LIMIT], operation)
            )
        return answers

    def _batch_chunk(self, chunk: Sequence[Request], operation: str) -> list[Answer]:
        answers: dict[int, Answer] = {}
        pending = list(range(len(chunk)))
        attempt, renewed = 0, False
        while pending:
            got = self._post_batch([(i, chunk[i]) for i in pending], operation)
            answers.update(got)
            expired = [i for i in pending if got[i].status == 401]
            retry = [i for i in pending if got[i].status in _RETRIED]
            pending = expired + retry
            if expired and renewed:
                raise UserError(self._refused_token())
            if expired:
                renewed = True
                self.tokens.token(force=True)
            if retry:
                attempt += 1
                if attempt > self.retries:
                    break  # the refused ones are answered as they are
                wait = max(_retry_after(got[i].headers) or 0.0 for i in retry)
                codes = sorted({str(got[i].status) for i in retry})
                self._wait(operation, f"HTTP {'/'.join(codes)}", wait or None, attempt)
        return [answers[i] for i in range(len(chunk))]

    def _post_batch(
        self, numbered: list[tuple[int, Request]], operation: str
    ) -> dict[int, Answer]:
        body = {
            "requests": [
                {
                    "id": str(i),
                    "method": r.method,
                    "url": r.url,
                    **({"headers": dict(r.headers)} if r.headers else {}),
                    **({"body": r.body} if r.body is not None else {}),
                }
                for i, r in numbered
            ]
        }
        if any(r.body is not None for _, r in numbered):
            for entry in body["requests"]:
                if "body" in entry:
                    entry.setdefault("headers", {})["Content-Type"] = "application/json"
        width = min(len(numbered), MAILBOX_CONCURRENCY)
        result = self._batch_post(body, width, operation)
        answers = {}
        for entry in result.get("responses", []):
            headers = {
                k.lower(): str(v) for k, v in (entry.get("headers") or {}).items()
            }
            answers[int(entry["id"])] = Answer(
                int(entry["status"]), entry.get("body"), headers
            )
        missing = [i for i, _ in numbered if i not in answers]
        for i in missing:  # a batch answer that lost one: try it again
            answers[i] = Answer(503, {"error": {"code": "Missing", "message": ""}})
        return answers

    def _batch_post(self, body: dict[str, Any], width: int, operation: str) -> Any:
        attempt, renewed = 0, False
        while True:
            try:
                self.slots.take(width)
                try:
                    return self._batch_once(body, operation)
                finally:
                    self.slots.give(width)
            except _Expired:
                if renewed:
                    raise UserError(self._refused_token()) from None
                renewed = True
                self.tokens.token(force=True)
            except _Temporary as exc:
                attempt += 1
                self._wait(operation, exc.why, exc.retry_after, attempt)

    def _batch_once(self, body: dict[str, Any], operation: str) -> Any:
        url = f"{self.root}/$batch"
        headers = {
            "Authorization": f"Bearer {self.tokens.token()}",
            "Accept": "application/json",
        }
        log.debug("mailbox %s: POST /$batch (%s)", self.address, operation)
        try:
            response = self.session.post(
                url, headers=headers, json=body, timeout=self.timeout
            )
            data = response.content
        except requests.exceptions.SSLError:
            raise UserError(self._untrusted()) from None
        except _BROKEN as exc:
            raise _Temporary(type(exc).__name__) from exc
        return _decode(response, data, f"$batch ({operation})")

    # --- helpers -----------------------------------------------------------

    def _absolute(self, url: str) -> str:
        if url.startswith("/"):
            return self.root + url
        if _origin(url) != self._origin:
            raise UserError(
                f"mailbox {self.address}: the server sent a link to another host "
                f"({urlsplit(url).hostname}); it is not followed"
            )
        return url

    def same_host(self, url: str) -> bool:
        return _origin(url) == self._origin

    def relative(self, url: str) -> str | None:
        """A link the server gave as the path under ``/v1.0`` that a
        ``$batch`` request names; ``None`` for a link elsewhere."""
        root, parts = urlsplit(self.root).path, urlsplit(url)
        if not self.same_host(url) or not parts.path.startswith(root + "/"):
            return None
        path = parts.path[len(root) :]
        return f"{path}?{parts.query}" if parts.query else path

    def _wait(
        self, operation: str, why: str, retry_after: float | None, attempt: int
    ) -> None:
        wait = retry_after if retry_after is not None else float(2 ** (attempt - 1))
        wait = min(wait, self.max_retry_wait)
        if attempt > self.retries:
            raise TransientError(
                f"mailbox {self.address}: {operation} still failing after "
                f"{attempt - 1} retries: {why}",
                retry_after=wait,
            )
        log.warning(
            "mailbox %s: %s failed (%s), attempt %d, waiting %.1fs",
            self.address,
            operation,
            why,
            attempt,
            wait,
        )
        self.sleep(wait)

    def _refused_token(self) -> str:
        return (
            f"mailbox {self.address}: Microsoft Graph refused the app's token "
            "twice (InvalidAuthenticationToken); check tenant_id and that the "
            "app registration is enabled"
        )

    def _untrusted(self) -> str:
        return (
            f"mailbox {self.address}: the TLS certificate of {self._origin} is not "
            "trusted (or not for this host name); if a private CA signed it (a "
            "TLS-inspecting proxy), set ca_bundle = the PEM file of that CA"
        )


class _Temporary(Exception):
    """A failure that may pass; ``status`` is None when no answer came."""

    def __init__(
        self, why: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(why)
        self.why, self.retry_after, self.status = why, retry_after, status


class _Expired(Exception):
    """A 401: the token was refused."""


def _decode(response: requests.Response, data: bytes, operation: str) -> Any:
    status = response.status_code
    if status == 401:
        raise _Expired()
    if status in _RETRIED:
        code, _ = _error_of(_json(data))
        why = f"HTTP {status} {code}".strip()
        raise _Temporary(why, _retry_after(response.headers), status)
    if status >= 400:
        code, message = _error_of(_json(data))
        raise GraphError(status, code, message, operation)
    if status == 204 or not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        # A page cut short (the connection closed inside the body).
        raise _Temporary("the answer was cut short") from None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _error_of(body: Any) -> tuple[str, str]:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code", "")), str(error.get("message", ""))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds, or as an HTTP date; ``None`` when absent."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"
