"""``mailsync mailboxes test`` for a Microsoft 365 mailbox: what is missing.

Graph refuses an app without the application permission an endpoint needs
with 403 ErrorAccessDenied ("Access is denied. Check credentials and try
again."), and a mailbox an application access policy keeps the app out of
with 403 ErrorAccessDenied whose message says "[RAOP] : Blocked by tenant
configured AppOnly AccessPolicy settings". An unknown user is 404
ErrorInvalidUser; a mailbox still on premises 404
MailboxNotEnabledForRESTAPI. A wrong secret never reaches Graph: the token
endpoint says invalid_client.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailsync.cli import cli
from mailsync.errors import UserError
from mailsync.items import FolderRole
from tests.graph.conftest import CLIENT_ID, REP, SECRET_ENV, connect, settings
from tests.graph.mailbox import Mailbox
from tests.graph.simulator import GraphSimulator


def test_a_mailbox_with_every_permission_passes(graph: GraphSimulator) -> None:
    connector, _ = connect(graph)
    lines = connector.check()
    assert lines[0] == f"signed in as app {CLIENT_ID} (client secret) to tenant " + (
        connector.mailbox.tenant_id
    )
    assert lines[1] == "7 mail folders, the calendar and 1 To Do lists found"
    assert graph.batched["messages.list"] == 1  # the probes went in one $batch


@pytest.mark.parametrize(
    ("granted", "missing"),
    [
        (("Mail.ReadWrite", "Tasks.ReadWrite.All"), "Calendars.Read"),
        (("Mail.Read", "Calendars.Read"), "Tasks.Read.All"),
        (("Mail.ReadBasic.All", "Calendars.Read", "Tasks.Read.All"), "Mail.Read"),
    ],
)
def test_a_missing_permission_is_named(
    graph: GraphSimulator, granted: tuple[str, ...], missing: str
) -> None:
    graph.add_app(CLIENT_ID, *granted)
    connector, _ = connect(graph)
    with pytest.raises(UserError) as refused:
        connector.check()
    text = str(refused.value)
    assert f"lacks the application permission(s) {missing}" in text
    assert "grant admin consent" in text
    assert "policy" not in text and "secret" not in text


def test_an_application_access_policy_is_told_apart(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    rep_box.blocked_apps.add(CLIENT_ID)
    connector, _ = connect(graph)
    with pytest.raises(UserError, match="an application access policy keeps app") as e:
        connector.check()
    assert f"Test-ApplicationAccessPolicy -Identity {REP} -AppId {CLIENT_ID}" in str(
        e.value
    )
    assert "lacks" not in str(e.value)


def test_an_unknown_mailbox_and_one_still_on_premises(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    unknown, _ = connect(graph, address="nobody@contoso.com")
    with pytest.raises(UserError, match="no such user or mailbox.*ErrorInvalidUser"):
        unknown.check()
    rep_box.on_premises = True
    local, _ = connect(graph)
    with pytest.raises(UserError, match='on premises.*keep kind = "ews"'):
        local.check()


def test_a_wrong_secret_is_not_taken_for_a_permission(graph: GraphSimulator) -> None:
    connector, _ = connect(graph, secret="expired-secret")
    with pytest.raises(UserError, match="invalid_client") as refused:
        connector.check()
    assert "permission" not in str(refused.value)


def test_without_calendars_read_the_mail_is_still_synced(
    graph: GraphSimulator, rep_box: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    graph.add_app(CLIENT_ID, "Mail.ReadWrite")
    connector, _ = connect(graph)
    with caplog.at_level(logging.WARNING, logger="mailsync"):
        roles = {f.role for f in connector.folders()}
    assert FolderRole.INBOX in roles
    assert FolderRole.CALENDAR not in roles and FolderRole.TASKS not in roles
    warnings = [r.getMessage() for r in caplog.records]
    assert any("lacks Calendars.Read" in w for w in warnings)
    assert any("lacks Tasks.Read.All" in w for w in warnings)


def write_config(path: Path, sim: GraphSimulator, **changes: Any) -> Path:
    mailbox = settings(sim, **changes).model_dump(mode="json", exclude_none=True)
    lines = [
        f'[database]\nurl = "sqlite:///{path.parent / "m.db"}"\n',
        '[organisation]\ninternal_domains = ["contoso.com"]\n',
        "[[mailboxes]]",
        *(f"{key} = {json.dumps(value)}" for key, value in mailbox.items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_mailboxes_test_on_the_command_line(
    graph: GraphSimulator, rep_box: Mailbox, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "mailsync.toml", graph)
    runner = CliRunner(env={SECRET_ENV: "Zq8~sample.graph-secret_4Lm2"})
    result = runner.invoke(cli, ["--config", str(config), "mailboxes", "test", REP])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"ok: signed in as app {CLIENT_ID}")

    rep_box.blocked_apps.add(CLIENT_ID)
    refused = runner.invoke(cli, ["--config", str(config), "mailboxes", "test", REP])
    assert refused.exit_code == 2
    assert "application access policy" in refused.output
    assert "Traceback" not in refused.output
