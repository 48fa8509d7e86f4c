"""TLS trust and token authorities shared by the connectors that use msal.

requests prefers ``REQUESTS_CA_BUNDLE`` to ``Session.verify``, but not to a
``verify`` given with the request: :class:`PinnedSession` gives it with every
one. Microsoft's own token endpoints are checked against the usual store; a
private one (ADFS, a test server) against the configured bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

MICROSOFT_HOSTS = (
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
)


class PinnedSession(requests.Session):
    """A session that verifies TLS with ``ca_bundle`` whatever the environment
    says (``None``: as requests would, with the system store or the
    environment's bundle)."""

    def __init__(self, ca_bundle: Path | None) -> None:
        super().__init__()
        self.ca_bundle = ca_bundle

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        # requests merges REQUESTS_CA_BUNDLE in here, over Session.verify.
        found = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings = dict(found)
        if self.ca_bundle is not None and settings.get("verify") is not False:
            settings["verify"] = str(self.ca_bundle)
        return settings


def is_microsoft(authority: str) -> bool:
    """Whether a token authority is one of Microsoft's own."""
    return (urlsplit(authority).hostname or "").endswith(MICROSOFT_HOSTS)
