"""Faults the Graph simulator injects, armed by tests.

Each fault answers the next ``times`` requests of an operation (``None``:
any operation; operations are named like ``messages.delta``,
``calendarView.delta``, ``$batch``, ``messages.patch``; see
:mod:`tests.graph.handlers`) in place of the real answer:

- ``throttle``: 429 ``ApplicationThrottled`` (the MailboxConcurrency
  message), with a Retry-After of ``retry_after`` seconds, or none;
- ``unavailable``: 503 ``ServiceUnavailable``, with or without Retry-After;
- ``gone``: 410 ``SyncStateNotFound`` for a delta request that carries a
  token (a skip or delta token the server no longer knows);
- ``expire_token``: every token handed out so far expires, and the request
  is answered 401 ``InvalidAuthenticationToken``;
- ``truncate``: the body is cut in half and the connection closed, its
  Content-Length promising the whole (``short=True``: the Content-Length
  matches the half, as a proxy that cut the answer would send);
- ``cut``: the connection closes with no answer;
- ``delay``: the real answer, ``seconds`` late.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    THROTTLE = "throttle"
    UNAVAILABLE = "unavailable"
    GONE = "gone"
    EXPIRE_TOKEN = "expire_token"
    TRUNCATE = "truncate"
    CUT = "cut"
    DELAY = "delay"


@dataclass
class Fault:
    kind: FaultKind
    operation: str | None
    times: int
    retry_after: float | None = None
    seconds: float = 0.0
    short: bool = False

    def matches(self, operation: str, has_token: bool) -> bool:
        if self.operation is not None and self.operation != operation:
            return False
        return self.kind is not FaultKind.GONE or has_token


class Faults:
    def __init__(self) -> None:
        self._armed: list[Fault] = []
        self._lock = threading.Lock()
        self.fired: list[Fault] = []

    def arm(self, fault: Fault) -> Fault:
        with self._lock:
            self._armed.append(fault)
        return fault

    def throttle(
        self,
        times: int = 1,
        retry_after: float | None = None,
        operation: str | None = None,
    ) -> Fault:
        return self.arm(Fault(FaultKind.THROTTLE, operation, times, retry_after))

    def unavailable(
        self,
        times: int = 1,
        retry_after: float | None = None,
        operation: str | None = None,
    ) -> Fault:
        return self.arm(Fault(FaultKind.UNAVAILABLE, operation, times, retry_after))

    def gone(self, operation: str | None = None, times: int = 1) -> Fault:
        return self.arm(Fault(FaultKind.GONE, operation, times))

    def expire_token(self, operation: str | None = None) -> Fault:
        return self.arm(Fault(FaultKind.EXPIRE_TOKEN, operation, 1))

    def truncate(
        self, times: int = 1, operation: str | None = None, short: bool = False
    ) -> Fault:
        return self.arm(Fault(FaultKind.TRUNCATE, operation, times, short=short))

    def cut(self, times: int = 1, operation: str | None = None) -> Fault:
        return self.arm(Fault(FaultKind.CUT, operation, times))

    def delay(
        self, seconds: float, times: int = 1, operation: str | None = None
    ) -> Fault:
        return self.arm(Fault(FaultKind.DELAY, operation, times, seconds=seconds))

    def take(self, operation: str, has_token: bool) -> Fault | None:
        """The fault for this request, if one is armed (it is used up)."""
        with self._lock:
            for fault in self._armed:
                if fault.matches(operation, has_token):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._armed.remove(fault)
                    self.fired.append(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
