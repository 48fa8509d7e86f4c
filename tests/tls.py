"""A certificate authority for tests, made by trustme, and HTTPS on loopback.

The CA's PEM file is written to a temporary directory; a server wraps its
socket with :meth:`TestCA.server_context`. Clients trust the CA only when
told to (a connector's ``ca_bundle``): the machine's store and
``REQUESTS_CA_BUNDLE`` do not know it.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, directory: Path) -> None:
        self._ca = trustme.CA(organization_name="mailsync test CA")
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self.pem = directory / "test-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.pem))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        return context


def serve_https(
    ca: TestCA, handler: type[BaseHTTPRequestHandler], name: str
) -> ThreadingHTTPServer:
    """A threaded HTTPS server on an ephemeral loopback port, already serving
    on a daemon thread; stop it with ``shutdown()`` and ``server_close()``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.socket = ca.server_context().wrap_socket(httpd.socket, server_side=True)
    threading.Thread(
        target=httpd.serve_forever, args=(0.05,), daemon=True, name=name
    ).start()
    return httpd
