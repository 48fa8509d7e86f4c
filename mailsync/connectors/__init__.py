"""Connectors: one module per mailbox kind. Only connectors speak protocols."""

from __future__ import annotations

from typing import Any

from mailsync.connectors.base import Connector


def open_connector(mailbox: Any) -> Connector:
    """The connector for a configured mailbox, chosen by its ``kind``."""
    if mailbox.kind == "local":
        from mailsync.connectors.local import LocalConnector

        return LocalConnector(
            mailbox.path,
            batch_size=mailbox.batch_size,
            outbox=mailbox.outbox,
            max_message_mb=mailbox.max_message_mb,
        )
    if mailbox.kind == "ews":
        from mailsync.connectors.ews import EwsConnector
        from mailsync.secrets import read_secret

        what = f"mailbox {mailbox.address}"
        if mailbox.auth == "oauth":
            secret = read_secret(
                what, mailbox.client_secret_env, mailbox.client_secret_file
            )
        else:
            secret = read_secret(what, mailbox.password_env, mailbox.password_file)
        return EwsConnector(mailbox, secret)
    if mailbox.kind == "graph":
        from mailsync.connectors.graph import GraphConnector
        from mailsync.connectors.graph_auth import read_credential

        return GraphConnector(mailbox, read_credential(mailbox))
    raise ValueError(f"no connector for kind {mailbox.kind!r}")
