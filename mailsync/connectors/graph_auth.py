"""How the Microsoft Graph connector signs in and whom it trusts.

- App-only access: msal's :class:`~msal.ConfidentialClientApplication` gets
  a token for ``<graph_url>/.default`` with the app registration's client
  secret, or with a client assertion signed by its certificate. The token
  lives in memory only (msal's default cache, never serialised), so there is
  no token cache at rest to protect.
- ``ca_bundle``: the CA that signed the Graph endpoint's certificate (a
  TLS-inspecting proxy, the test simulator). requests prefers
  ``REQUESTS_CA_BUNDLE`` to ``Session.verify``, but not to a ``verify``
  given with the request: :class:`~mailsync.connectors.trust.PinnedSession`
  gives it with every one.
  Microsoft's own token endpoint is checked against the usual store; a
  private one (a test server) against the bundle.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import msal
import requests

from mailsync.config import GraphMailbox
from mailsync.connectors.trust import PinnedSession, is_microsoft
from mailsync.errors import ConfigError, UserError
from mailsync.secrets import Secret, read_secret

log = logging.getLogger(__name__)

# A token is renewed this long before msal says it expires.
EXPIRY_MARGIN = 60.0

_PEM_KEY = re.compile(
    r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.+?"
    r"-----END (?:RSA |EC )?PRIVATE KEY-----",
    re.S,
)
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@dataclass(frozen=True)
class Credential:
    """A client secret, or a certificate's private key and certificate."""

    secret: Secret | None = None
    private_key: Secret | None = None
    certificate: str = ""
    thumbprint: str | None = None

    @property
    def kind(self) -> str:
        return "client secret" if self.secret is not None else "certificate"

    def for_msal(self) -> str | dict[str, str]:
        if self.secret is not None:
            return self.secret.reveal()
        assert self.private_key is not None
        found: dict[str, str] = {
            "private_key": self.private_key.reveal(),
            "public_certificate": self.certificate,
        }
        if self.thumbprint:
            found["thumbprint"] = self.thumbprint
        return found

    def __repr__(self) -> str:
        return f"Credential({self.kind}, hidden)"


def read_credential(mailbox: GraphMailbox) -> Credential:
    """The client secret or the certificate the configuration names."""
    what = f"mailbox {mailbox.address}"
    if mailbox.certificate_file is None:
        secret = read_secret(
            what, mailbox.client_secret_env, mailbox.client_secret_file
        )
        return Credential(secret=secret)
    pem = read_secret(what, None, mailbox.certificate_file).reveal()
    if "ENCRYPTED PRIVATE KEY" in pem:
        raise ConfigError(
            f"{what}: the private key in {mailbox.certificate_file} is encrypted; "
            "store it unencrypted in that file (mode 600), e.g. with "
            "`openssl pkey -in key.pem -out plain.pem`"
        )
    key, certificates = _PEM_KEY.search(pem), _PEM_CERT.findall(pem)
    if key is None or not certificates:
        raise ConfigError(
            f"{what}: {mailbox.certificate_file} must hold the private key and "
            "the certificate, both in PEM (-----BEGIN ...-----)"
        )
    return Credential(
        private_key=Secret(key.group(0), str(mailbox.certificate_file)),
        certificate=certificates[0],
        thumbprint=mailbox.certificate_thumbprint,
    )


class GraphTokens:
    """App tokens for one mailbox's connector, from msal, kept in memory."""

    def __init__(self, mailbox: GraphMailbox, credential: Credential) -> None:
        self._who = f"mailbox {mailbox.address}"
        self._scopes = [mailbox.scope]
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None
        self.kind = credential.kind
        microsoft = is_microsoft(mailbox.authority)
        authority = f"{mailbox.authority}/{mailbox.tenant_id}"
        try:
            self._app = msal.ConfidentialClientApplication(
                mailbox.client_id,
                client_credential=credential.for_msal(),
                authority=authority,
                http_client=PinnedSession(None if microsoft else mailbox.ca_bundle),
                # A private authority is not in Microsoft's instance list;
                # asking would tell the internet our tenant.
                instance_discovery=microsoft,
                validate_authority=microsoft,
            )
        except ValueError as exc:  # msal checks the certificate and the authority
            raise ConfigError(f"{self._who}: {exc}") from None
        except requests.RequestException as exc:
            raise UserError(_unreachable(self._who, mailbox.authority, exc)) from None
        self._authority = mailbox.authority

    def token(self, force: bool = False) -> str:
        """A valid access token; ``force`` asks for a new one."""
        with self._lock:
            if not force and self._token and self._token[1] > time.time():
                return self._token[0]
            if force:  # msal has no force_refresh for app tokens: forget them
                cache = self._app.token_cache
                kind = msal.TokenCache.CredentialType.ACCESS_TOKEN
                for entry in list(cache.search(kind)):
                    cache.remove_at(entry)
            try:
                result = self._app.acquire_token_for_client(scopes=self._scopes)
            except requests.RequestException as exc:
                raise UserError(_unreachable(self._who, self._authority, exc)) from None
            if "access_token" not in result:
                raise UserError(refusal(self._who, result))
            lifetime = float(result.get("expires_in", 3600))
            expires = time.time() + max(lifetime - EXPIRY_MARGIN, lifetime / 2)
            self._token = (str(result["access_token"]), expires)
            return self._token[0]

    def __repr__(self) -> str:
        return f"GraphTokens({self._who}, tokens hidden)"


def _unreachable(who: str, authority: str, exc: Exception) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return (
            f"{who}: the TLS certificate of the token endpoint {authority} is not "
            "trusted; if a private CA signed it, set ca_bundle = the PEM file of "
            "that CA"
        )
    return (
        f"{who}: the token endpoint {authority} does not answer "
        f"({type(exc).__name__}); check authority and tenant_id"
    )


def refusal(who: str, result: dict[str, Any]) -> str:
    """What the token endpoint said, as advice. AADSTS codes are Entra ID's."""
    code = str(result.get("error", "unknown_error"))
    first_line = (str(result.get("error_description", "")).splitlines() or [""])[0]
    said = f" ({first_line})" if first_line else ""
    if code == "invalid_client":
        fix = (
            "check client_id and the client secret (it may have expired) or the "
            "certificate (it must be uploaded to the app registration)"
        )
    elif code == "unauthorized_client":
        fix = "check tenant_id, and that the app registration exists in that tenant"
    elif code == "invalid_scope":
        fix = "check graph_url: the scope asked for is <graph_url>/.default"
    else:
        fix = "check tenant_id, client_id, the secret or certificate, and authority"
    return f"{who}: the token endpoint refused to sign in: {code}{said}; {fix}"
