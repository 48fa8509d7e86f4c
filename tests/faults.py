"""Faults injected around a real connector."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mailsync.connectors.base import Connector
from mailsync.items import ChangeBatch, Folder


class Crash(BaseException):
    """The process dies: nothing in mailsync may catch this."""


class CrashAfter:
    """A real connector whose process dies after ``pages`` pages."""

    def __init__(self, inner: Connector, pages: int) -> None:
        self.inner, self.left = inner, pages

    def folders(self) -> list[Folder]:
        return self.inner.folders()

    def changes(self, folder: Folder, cursor: str | None) -> Iterator[ChangeBatch]:
        for batch in self.inner.changes(folder, cursor):
            if self.left == 0:
                raise Crash("the process died here")
            self.left -= 1
            yield batch

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # The inner connector's optional capabilities (a change check,
        # category writes) are this one's: a crash is injected only in pages.
        return getattr(self.inner, name)
