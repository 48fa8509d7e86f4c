"""Secrets: read from an environment variable or a file, never from the config.

A :class:`Secret` hides its value in ``repr`` and ``str``; ask for it with
:meth:`Secret.reveal` at the one place that hands it to a library.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mailsync.errors import ConfigError


class Secret:
    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        from mailsync.redact import remember

        self._value = value
        self.source = source
        remember(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(from {self.source}, value hidden)"

    __str__ = __repr__


def read_secret(what: str, env: str | None, file: Path | None) -> Secret:
    """The secret named by ``env`` or ``file``; a clear error when it is missing."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"{what}: the environment variable {env} is not set; set it, or use "
                "a file named by the *_file key"
            )
        return Secret(value, f"${env}")
    if file:
        return Secret(_read_private_file(what, file), str(file))
    raise ConfigError(f"{what}: name the secret with password_env or password_file")


def _read_private_file(what: str, path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{what}: secret file {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what}: secret file {path} can be read by others; run `chmod 600 {path}`"
        )
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ConfigError(f"{what}: secret file {path} is empty")
    return value
