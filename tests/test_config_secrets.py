"""The configuration refuses secrets in clear and sign-ins that leak them."""

from __future__ import annotations

from typing import Any

import pytest

from mailsync.config import parse_config
from mailsync.errors import ConfigError

EWS = {
    "address": "tamara@contoso.com",
    "rep": "Tamara Johnston",
    "kind": "ews",
    "endpoint": "https://mail.contoso.com/EWS/Exchange.asmx",
    "username": "svc-mailsync@contoso.com",
    "password_env": "MAILSYNC_EWS_PASSWORD",
}


def refused(**mailbox: Any) -> str:
    raw = {
        "organisation": {"internal_domains": ["contoso.com"]},
        "mailboxes": [{**EWS, **mailbox}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return str(caught.value)


@pytest.mark.parametrize(
    ("key", "fix"),
    [
        ("password", "password_env or password_file"),
        ("client_secret", "client_secret_env or client_secret_file"),
    ],
)
def test_a_secret_in_clear_is_refused_and_not_repeated(key: str, fix: str) -> None:
    text = refused(**{key: "hunter2-in-clear"})
    assert f"mailboxes[0].{key}: a secret written in the configuration" in text
    assert fix in text
    assert "hunter2-in-clear" not in text


def test_plain_http_to_another_host_is_refused() -> None:
    text = refused(endpoint="http://mail.contoso.com/EWS/Exchange.asmx")
    assert "mailboxes[0].endpoint" in text and "use https://" in text


def test_plain_http_to_this_machine_is_allowed() -> None:
    raw = {
        "organisation": {"internal_domains": ["contoso.com"]},
        "mailboxes": [{**EWS, "endpoint": "http://127.0.0.1:8080/EWS/Exchange.asmx"}],
    }
    assert parse_config(raw).mailboxes[0].endpoint.startswith("http://127.0.0.1")


def test_two_places_for_one_password_are_refused() -> None:
    text = refused(password_file="/etc/mailsync/ews.secret")
    assert "password_env and password_file are both set; keep one" in text
