"""Keeping secrets out of the logs.

:class:`RedactingFilter` sits on the log handlers and rewrites every record,
ours and the libraries' (exchangelib, msal, requests, urllib3, httpx), before
it is written: ``Authorization`` headers, bearer and basic credentials,
password and token fields, and every secret mailsync has read (see
:func:`remember`) become ``***``. exchangelib's own DEBUG output also dumps
whole SOAP bodies, mail included, and so does requests_oauthlib's, which
carries exchangelib's requests with OAuth ("Supplying headers ... and data"):
their loggers are capped at INFO.
"""

from __future__ import annotations

import base64
import logging
import re
import threading

MASK = "***"
_known: set[str] = set()
_lock = threading.Lock()

_PATTERNS = [
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(\w+\s+)?[^\s'\",}]+"),
    re.compile(r"(?i)\b(bearer|basic|ntlm|negotiate)\s+[a-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)((?:password|passwd|client_secret|secret|access_token|refresh_token|"
        r"id_token|token)['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+"
    ),
]
QUIET_LIBRARIES = ("exchangelib", "requests_oauthlib")


def remember(secret: str) -> None:
    """A secret value to mask wherever it appears, also in Basic-auth form."""
    if len(secret) < 4:
        return
    with _lock:
        _known.add(secret)


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(_mask_match, text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    if known and "Basic" in text:
        text = _mask_basic(text, known)
    return text


def _mask_match(match: re.Match[str]) -> str:
    prefix = match.group(1) if match.lastindex else ""
    if prefix and prefix.lower() in ("bearer", "basic", "ntlm", "negotiate"):
        return f"{prefix} {MASK}"
    return f"{prefix or ''}{MASK}"


def _mask_basic(text: str, known: list[str]) -> str:
    for token in re.findall(r"[A-Za-z0-9+/=]{8,}", text):
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8", "replace")
        except ValueError:
            continue
        if any(secret in decoded for secret in known):
            text = text.replace(token, MASK)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is not ours to fix
            message = str(record.msg)
        record.msg = redact(message)
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info)
            )
            record.exc_info = None
        return True


def install(level: int) -> None:
    """Put the filter on every root handler and quiet the chatty libraries."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
