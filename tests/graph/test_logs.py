"""No secret, token or mail body in the logs of a whole run at DEBUG.

The installed ``mailsync`` script syncs the simulated Microsoft 365 mailbox
in a process of its own, msal's and urllib3's logging included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.contract import message
from tests.graph.conftest import CLIENT_SECRET, SECRET_ENV, settings
from tests.graph.mailbox import Mailbox, Message
from tests.graph.simulator import GraphSimulator
from tests.token_server import TokenServer

MAILSYNC = Path(sys.executable).parent / "mailsync"


def test_a_debug_run_logs_no_secret_token_or_body(
    graph: GraphSimulator, rep_box: Mailbox, tokens: TokenServer, tmp_path: Path
) -> None:
    for n in range(3):
        rep_box.add(Message.from_mime(message(n)))
    mailbox = settings(graph).model_dump(mode="json", exclude_none=True)
    config = tmp_path / "mailsync.toml"
    url = json.dumps(f"sqlite:///{tmp_path / 'm.db'}")
    config.write_text(
        f"[database]\nurl = {url}\n"
        '[organisation]\ninternal_domains = ["contoso.com"]\n'
        "[[mailboxes]]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in mailbox.items())
    )
    env = {**os.environ, SECRET_ENV: CLIENT_SECRET, "NO_PROXY": "127.0.0.1"}
    base = [str(MAILSYNC), "--config", str(config), "--log-level", "DEBUG"]
    subprocess.run([*base, "init"], env=env, check=True, capture_output=True)
    run = subprocess.run(
        [*base, "sync", "--once"], env=env, capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 0, run.stderr
    logs = run.stdout + run.stderr
    assert "mailbox tamara@contoso.com: 6 folders, 3 items" in logs
    assert "DEBUG" in logs
    assert tokens.issued, "the run signed in"
    assert CLIENT_SECRET not in logs
    assert not [t for t in tokens.issued if t in logs]
    assert "Please ship order" not in logs  # mail bodies are personal data
