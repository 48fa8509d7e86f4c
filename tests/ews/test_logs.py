"""No secret in the logs of a whole run at DEBUG, exchangelib's included."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from mailsync.redact import RedactingFilter, redact, remember
from tests.contract import message
from tests.ews.conftest import REP, SERVICE_PASSWORD, SERVICE_USER
from tests.ews.simulator import EwsSimulator, SimMailbox, SimMessage

MAILSYNC = Path(sys.executable).parent / "mailsync"


def test_a_debug_run_logs_no_password(
    ews: EwsSimulator, rep_mailbox: SimMailbox, tmp_path: Path
) -> None:
    for n in range(3):
        rep_mailbox.add(SimMessage.from_mime(message(n)), "inbox")
    config = tmp_path / "mailsync.toml"
    url = json.dumps(f"sqlite:///{tmp_path / 'm.db'}")
    config.write_text(
        f"[database]\nurl = {url}\n"
        '[organisation]\ninternal_domains = ["contoso.com"]\n'
        "[[mailboxes]]\n"
        f'address = "{REP}"\nrep = "Tamara Johnston"\nkind = "ews"\n'
        f'endpoint = "{ews.url}"\nusername = "{SERVICE_USER}"\nauth = "basic"\n'
        'password_env = "MAILSYNC_EWS_PASSWORD"\n'
    )
    env = {
        **os.environ,
        "MAILSYNC_EWS_PASSWORD": SERVICE_PASSWORD,
        "NO_PROXY": "127.0.0.1",
    }
    base = [str(MAILSYNC), "--config", str(config), "--log-level", "DEBUG"]
    subprocess.run([*base, "init"], env=env, check=True, capture_output=True)
    run = subprocess.run(
        [*base, "sync", "--once"], env=env, capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 0, run.stderr
    logs = run.stdout + run.stderr
    assert "mailbox tamara@contoso.com" in logs and "DEBUG" in logs
    basic = base64.b64encode(f"{SERVICE_USER}:{SERVICE_PASSWORD}".encode()).decode()
    assert SERVICE_PASSWORD not in logs
    assert basic not in logs
    assert "Please ship order" not in logs  # mail bodies are personal data


def test_the_filter_masks_headers_tokens_and_known_secrets() -> None:
    import logging

    remember("s3cret-value-42")
    record = logging.LogRecord(
        "x",
        logging.DEBUG,
        __file__,
        1,
        "sent %s with %s",
        ({"Authorization": "Bearer abc.def.ghijk"}, "password=s3cret-value-42"),
        None,
    )
    RedactingFilter().filter(record)
    text = record.getMessage()
    assert "abc.def.ghijk" not in text and "s3cret-value-42" not in text
    assert redact("client_secret: xyz123456") == "client_secret: ***"
