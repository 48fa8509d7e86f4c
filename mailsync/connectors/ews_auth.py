"""How the EWS connector signs in and whom it trusts.

- ``basic`` and ``ntlm``: exchangelib's :class:`~exchangelib.Credentials`.
- ``oauth``: client credentials of an app registration. msal's
  :class:`~msal.ConfidentialClientApplication` gets the token and keeps it in
  memory only; :class:`MsalCredentials` hands it to exchangelib and asks msal
  again when exchangelib drops it or finds it expired. Nothing is written to
  disk, so there is no token cache to protect.
- ``ca_bundle``: the CA that signed the server's certificate (a TLS-inspecting
  proxy, an internal CA). It wins over ``REQUESTS_CA_BUNDLE`` and the system
  store for the EWS host (and for a token endpoint that is not Microsoft's,
  such as ADFS). requests would otherwise prefer the environment's bundle to
  ``Session.verify``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from exchangelib import BaseProtocol, OAuth2Credentials
from requests.adapters import HTTPAdapter

from mailsync.connectors.trust import PinnedSession, is_microsoft
from mailsync.errors import UserError
from mailsync.secrets import Secret

log = logging.getLogger(__name__)

# Tokens are renewed this long before msal says they expire.
EXPIRY_MARGIN = 60.0

# --- trust ---------------------------------------------------------------

_ca_by_host: dict[str, str] = {}
_ca_lock = threading.Lock()


def trust_ca(url: str, ca_bundle: Path) -> None:
    """Verify the host of ``url`` against ``ca_bundle`` from now on."""
    host = _host(url)
    with _ca_lock:
        _ca_by_host[host] = str(ca_bundle)
        # exchangelib makes every session's adapter from this class attribute,
        # its documented hook for custom certificate checks.
        BaseProtocol.HTTP_ADAPTER_CLS = CaBundleAdapter


def ca_for(url: str) -> str | None:
    return _ca_by_host.get(_host(url))


def _host(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname or ''}:{port}"


class CaBundleAdapter(HTTPAdapter):
    """Verifies a host with its configured CA bundle, whatever requests merged
    in from the environment; other hosts are verified as requests would."""

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        ca = ca_for(request.url or "")
        if ca is not None and verify is not False:
            verify = ca
        return super().send(request, stream, timeout, verify, cert, proxies)


# --- OAuth ---------------------------------------------------------------


class MsalCredentials(OAuth2Credentials):
    """App-only OAuth for exchangelib, with tokens from msal.

    exchangelib holds the token in ``access_token``; it clears it when it
    closes a session and calls :meth:`refresh` when the token has expired.
    Both lead back to msal, which answers from its memory until the token is
    near its end. The client secret never reaches exchangelib, so exchangelib
    never tries to fetch a token on its own.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        secret: Secret,
        authority: str,
        scope: str,
        ca_bundle: Path | None,
        who: str,
    ) -> None:
        self._app_lock = threading.Lock()
        self._who = who
        self._scope = (scope,)
        authority_url = f"{authority.rstrip('/')}/{tenant_id}"
        self._app = msal.ConfidentialClientApplication(
            client_id,
            client_credential=secret.reveal(),
            authority=authority_url,
            # Microsoft's own endpoint is checked against the usual store; a
            # private one (ADFS, a test server) against the bundle.
            http_client=PinnedSession(None if is_microsoft(authority) else ca_bundle),
            # A private authority (ADFS, a test server) is not in Microsoft's
            # instance list; asking would leak the tenant to the internet.
            instance_discovery=not is_microsoft(authority),
            validate_authority=is_microsoft(authority),
        )
        super().__init__(client_id=client_id, client_secret=None, tenant_id=tenant_id)
        self._token_for(force=False)

    # exchangelib reads and clears the token through this property.
    @property
    def access_token(self) -> dict[str, Any] | None:
        token = self.__dict__.get("_access_token")
        if token is None or token.get("expires_at", 0) - EXPIRY_MARGIN < time.time():
            token = self._token_for(force=False)
        return token

    @access_token.setter
    def access_token(self, value: dict[str, Any] | None) -> None:
        self.__dict__["_access_token"] = value

    def refresh(self, session: Any) -> None:
        self._token_for(force=True)

    def _token_for(self, force: bool) -> dict[str, Any]:
        with self._app_lock:
            if force:  # msal has no force_refresh for app tokens: forget them
                cache = self._app.token_cache
                kind = msal.TokenCache.CredentialType.ACCESS_TOKEN
                for entry in list(cache.search(kind)):
                    cache.remove_at(entry)
            result = self._app.acquire_token_for_client(scopes=list(self._scope))
        if "access_token" not in result:
            raise UserError(_refusal(self._who, result))
        token = {
            "access_token": result["access_token"],
            "token_type": result.get("token_type", "Bearer"),
            "expires_in": float(result.get("expires_in", 3600)),
            "expires_at": time.time() + float(result.get("expires_in", 3600)),
        }
        self.__dict__["_access_token"] = token
        return token

    def __repr__(self) -> str:
        return f"MsalCredentials({self.client_id!r}, secret hidden)"

    __str__ = __repr__


def _refusal(who: str, result: dict[str, Any]) -> str:
    """What the token endpoint said, as advice. AADSTS codes are Entra ID's."""
    code = str(result.get("error", "unknown_error"))
    first_line = (str(result.get("error_description", "")).splitlines() or [""])[0]
    said = f" ({first_line})" if first_line else ""
    if code == "invalid_client":
        fix = "check client_id and the client secret (it may have expired)"
    elif code == "unauthorized_client":
        fix = "check tenant_id, and that the app registration exists in that tenant"
    elif code == "invalid_scope":
        fix = "check oauth_scope: the EWS server's URL followed by /.default"
    else:
        fix = "check tenant_id, client_id, the client secret and authority"
    return f"{who}: the token endpoint refused to sign in: {code}{said}; {fix}"
