"""Faults that tests arm on the simulator or on one mailbox.

Each armed fault fires on the next matching requests (``times`` of them), then
disarms itself. ``operation`` limits a fault to one EWS operation by name
(``"SyncFolderItems"``); ``None`` matches every request. A fault armed on a
mailbox only fires for requests that act on that mailbox; one armed on the
server fires for any request, including the version probe.

Kinds, and what a real Exchange server does that each one imitates:

- ``server_busy``: throttling. By default a SOAP fault ``ErrorServerBusy``
  with HTTP 500 and ``BackOffMilliseconds`` in its ``MessageXml``, which is
  how Exchange answers when a throttling budget is spent. With
  ``in_response=True`` it is an error ``ResponseMessage`` with HTTP 200
  instead (also seen, for example when a search budget is spent).
- ``http_error``: an IIS error page with the given HTTP status.
- ``slow``: the answer comes ``seconds`` late.
- ``cut``: the server sends the headers and half the body, then closes the
  connection.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    SERVER_BUSY = "server_busy"
    HTTP_ERROR = "http_error"
    SLOW = "slow"
    CUT = "cut"


@dataclass
class Fault:
    kind: FaultKind
    times: int
    operation: str | None = None
    back_off_ms: int = 0
    in_response: bool = False
    status: int = 500
    seconds: float = 0.0

    def matches(self, operation: str) -> bool:
        return self.times > 0 and self.operation in (None, operation)


class Faults:
    """The faults armed on one mailbox or on the whole server."""

    def __init__(self) -> None:
        self._armed: list[Fault] = []
        self._lock = threading.Lock()

    def server_busy(
        self,
        times: int = 1,
        back_off_ms: int = 50,
        *,
        operation: str | None = None,
        in_response: bool = False,
    ) -> None:
        self._arm(
            Fault(FaultKind.SERVER_BUSY, times, operation, back_off_ms, in_response)
        )

    def http_error(
        self, times: int = 1, status: int = 500, *, operation: str | None = None
    ) -> None:
        self._arm(Fault(FaultKind.HTTP_ERROR, times, operation, status=status))

    def slow(
        self, seconds: float, times: int = 1, *, operation: str | None = None
    ) -> None:
        self._arm(Fault(FaultKind.SLOW, times, operation, seconds=seconds))

    def cut(self, times: int = 1, *, operation: str | None = None) -> None:
        self._arm(Fault(FaultKind.CUT, times, operation))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def _arm(self, fault: Fault) -> None:
        if fault.times < 1:
            raise ValueError("a fault fires at least once")
        with self._lock:
            self._armed.append(fault)

    def take(self, operation: str) -> Fault | None:
        """The first armed fault for ``operation``, counted as fired."""
        with self._lock:
            for fault in self._armed:
                if fault.matches(operation):
                    fault.times -= 1
                    if fault.times == 0:
                        self._armed.remove(fault)
                    return fault
            return None

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(f.times for f in self._armed)
