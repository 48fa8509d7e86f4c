"""A Microsoft identity platform token endpoint over HTTPS, for msal in tests.

It serves what msal's ConfidentialClientApplication asks for with a private
authority (``https://127.0.0.1:PORT/<tenant>``, instance discovery off):

- ``GET /<tenant>/v2.0/.well-known/openid-configuration``: the OpenID
  discovery document, whose ``token_endpoint`` points back here;
- ``POST /<tenant>/oauth2/v2.0/token`` with ``grant_type=client_credentials``,
  ``client_id``, ``client_secret`` and ``scope``: an opaque bearer token with
  ``expires_in``, or the error JSON of the v2.0 endpoint (``invalid_client``
  with AADSTS7000215 for a wrong secret, ``unauthorized_client`` with
  AADSTS700016 for an unknown app, ``invalid_scope`` with AADSTS70011).
  An app registered with a certificate signs in with a client assertion
  instead of a secret (``client_assertion_type`` jwt-bearer): a JWT whose
  header names the certificate by ``x5t`` (SHA-1) or ``x5t#S256``, signed
  with its key (RS256 or PS256), for this token endpoint as audience and
  the client id as issuer and subject (AADSTS700027 when it fails).

Servers that accept its tokens ask :meth:`TokenServer.holder` who a token
belongs to; an expired or unknown token belongs to nobody. ``issued`` keeps
every token handed out and ``assertions`` every client assertion received,
so that a test can look for them in a log. Nothing here logs a secret or a
token.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.tls import TestCA, serve_https

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class App:
    """An app registration: its client id, secret and the scopes it may get."""

    client_id: str
    secret: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    certificate: str = ""  # PEM; an app with one signs in by client assertion


@dataclass(frozen=True)
class Issued:
    client_id: str
    scope: str
    expires_at: float


class TokenServer:
    def __init__(self, ca: TestCA, tenant: str, lifetime: float = 3599) -> None:
        self.ca = ca
        self.tenant = tenant
        self.lifetime = lifetime
        self.apps: dict[str, App] = {}
        self.issued: dict[str, Issued] = {}
        self.assertions: list[str] = []
        self.token_requests = 0
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def add_app(self, client_id: str, secret: str, *scopes: str) -> App:
        app = App(client_id, secret, scopes)
        self.apps[client_id] = app
        return app

    def add_certificate_app(
        self, client_id: str, certificate_pem: str, *scopes: str
    ) -> App:
        """An app that signs in with a client assertion from this certificate."""
        app = App(client_id, "", scopes, certificate=certificate_pem)
        self.apps[client_id] = app
        return app

    def holder(self, token: str, scope_host: str) -> str | None:
        """The client id a valid token was issued to for that audience."""
        with self.lock:
            issued = self.issued.get(token)
        if issued is None or issued.expires_at <= time.time():
            return None
        if not issued.scope.startswith(scope_host.rstrip("/") + "/"):
            return None
        return issued.client_id

    def expire_all(self) -> None:
        """Every token handed out so far stops being accepted."""
        with self.lock:
            self.issued = {
                k: Issued(v.client_id, v.scope, 0.0) for k, v in self.issued.items()
            }

    @property
    def authority(self) -> str:
        """The ``authority`` a client configures (without the tenant)."""
        assert self._httpd is not None, "the token server is not running"
        host, port = self._httpd.server_address[:2]
        return f"https://{host!s}:{port}"

    # ------------------------------------------------------------- answers

    def _discovery(self) -> dict[str, object]:
        base = f"{self.authority}/{self.tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "response_types_supported": ["code", "id_token", "code id_token"],
            "tenant_region_scope": None,
        }

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        with self.lock:
            self.token_requests += 1
        if form.get("grant_type") != "client_credentials":
            return 400, _error("unsupported_grant_type", "AADSTS70003")
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            return 400, _error(
                "unauthorized_client",
                "AADSTS700016: Application with identifier "
                f"'{form.get('client_id', '')}' was not found in the directory.",
            )
        if app.certificate:
            refused = self._check_assertion(app, form)
            if refused is not None:
                return 401, _error("invalid_client", refused)
        elif not secrets.compare_digest(form.get("client_secret", ""), app.secret):
            return 401, _error(
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the "
                "secret being sent in the request is the client secret value, "
                "not the client secret ID.",
            )
        scope = " ".join(
            s for s in form.get("scope", "").split() if s.endswith("/.default")
        )
        if scope not in app.scopes:
            return 400, _error(
                "invalid_scope",
                f"AADSTS70011: The provided value for scope {scope} is not valid.",
            )
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.issued[token] = Issued(
                app.client_id, scope, time.time() + self.lifetime
            )
        return 200, {
            "token_type": "Bearer",
            "expires_in": int(self.lifetime),
            "ext_expires_in": int(self.lifetime),
            "access_token": token,
        }

    def _check_assertion(self, app: App, form: dict[str, str]) -> str | None:
        """Why the client assertion fails, or None when it holds."""
        if form.get("client_assertion_type") != JWT_BEARER:
            return (
                "AADSTS7000218: The request body must contain the following "
                "parameter: 'client_assertion' or 'client_secret'."
            )
        assertion = form.get("client_assertion", "")
        with self.lock:
            self.assertions.append(assertion)
        certificate = x509.load_pem_x509_certificate(app.certificate.encode())
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return "AADSTS50027: JWT token is invalid or malformed."
        sha1 = _thumbprint(certificate, hashes.SHA1())
        sha256 = _thumbprint(certificate, hashes.SHA256())
        named = {str(header.get(k, "")).rstrip("=") for k in ("x5t", "x5t#S256")}
        if sha1 not in named and sha256 not in named:
            return (
                "AADSTS700027: The certificate with identifier used to sign the "
                "client assertion is not registered on application."
            )
        try:
            claims = jwt.decode(
                assertion,
                certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=f"{self.authority}/{self.tenant}/oauth2/v2.0/token",
                issuer=app.client_id,
            )
        except jwt.PyJWTError:
            return "AADSTS700027: Client assertion failed signature validation."
        if claims.get("sub") != app.client_id:
            return "AADSTS700021: Client assertion application identifier mismatch."
        return None

    # ----------------------------------------------------------- lifecycle

    def start(self) -> Self:
        httpd = serve_https(self.ca, _Handler, "token-sim")
        httpd.token_server = self  # type: ignore[attr-defined]
        self._httpd = httpd
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _thumbprint(certificate: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    digest = certificate.fingerprint(algorithm)
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _error(code: str, description: str) -> dict[str, object]:
    return {
        "error": code,
        "error_description": description,
        "error_codes": [int(description[6:].split(":")[0])]
        if description.startswith("AADSTS") and ":" in description
        else [],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def _server(self) -> TokenServer:
        return self.server.token_server  # type: ignore[attr-defined,no-any-return]

    def do_GET(self) -> None:
        wanted = f"/{self._server.tenant}/v2.0/.well-known/openid-configuration"
        if self.path.split("?")[0] == wanted:
            self._json(200, self._server._discovery())
        else:
            self._json(404, _error("invalid_tenant", "AADSTS90002: no such tenant"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8")
        if self.path.split("?")[0] != f"/{self._server.tenant}/oauth2/v2.0/token":
            self._json(404, _error("invalid_tenant", "AADSTS90002: no such tenant"))
            return
        form = {k: v[0] for k, v in parse_qs(body).items()}
        status, answer = self._server._token(form)
        self._json(status, answer)

    def _json(self, status: int, answer: dict[str, object]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store, no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the requests carry secrets."""
