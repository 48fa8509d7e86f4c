"""The one exception family of mailsync.

Three kinds sit under :class:`MailsyncError`:

- :class:`UserError`: bad input or configuration. The message names the input and
  the fix; the CLI shows it without a traceback.
- :class:`TransientError`: a failure that is expected to pass (a busy server, a
  dropped connection). It is retried.
- anything else is a bug, and shows a traceback at debug level.
"""


class MailsyncError(Exception):
    """Base of every error that mailsync raises on purpose."""


class UserError(MailsyncError):
    """Bad input or configuration; the message says how to fix it."""


class ConfigError(UserError):
    """The configuration file is wrong."""


class TransientError(MailsyncError):
    """A temporary failure; the operation may be retried."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ParseError(MailsyncError):
    """An item could not be read; it is recorded as rejected with this reason."""
