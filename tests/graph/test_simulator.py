"""The Graph simulator itself, asked with plain requests as the reference says.

These pin the simulator to Graph's documented behaviour, independently of
the connector: bearer tokens for the simulator's audience, ``$batch`` of at
most 20, ``$select`` checked, ``Prefer: odata.maxpagesize`` and
``IdType="ImmutableId"`` honoured, a read-flag change as a partial delta
entry, calendarView delta without ``$select``.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.contract import message
from tests.graph.conftest import CLIENT_ID, CLIENT_SECRET, REP
from tests.graph.mailbox import Mailbox, Message
from tests.graph.simulator import GraphSimulator
from tests.token_server import TokenServer


@pytest.fixture
def client(graph: GraphSimulator, tokens: TokenServer) -> Any:
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": f"{graph.url}/.default",
    }
    token_url = f"{tokens.authority}/{tokens.tenant}/oauth2/v2.0/token"
    token = requests.post(token_url, data=form, verify=str(graph.ca.pem)).json()

    def ask(method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        headers.update(kwargs.pop("headers", {}))
        url = path if path.startswith("https://") else f"{graph.url}/v1.0{path}"
        return requests.request(
            method, url, headers=headers, verify=str(graph.ca.pem), **kwargs
        )

    return ask


def test_no_token_and_a_token_for_another_audience_are_refused(
    graph: GraphSimulator, tokens: TokenServer
) -> None:
    elsewhere = "https://graph.example.net/.default"
    tokens.add_app(CLIENT_ID, CLIENT_SECRET, f"{graph.url}/.default", elsewhere)
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": elsewhere,
    }
    token_url = f"{tokens.authority}/{tokens.tenant}/oauth2/v2.0/token"
    foreign = requests.post(token_url, data=form, verify=str(graph.ca.pem)).json()
    url = f"{graph.url}/v1.0/users/{REP}/mailFolders"
    for headers in ({}, {"Authorization": f"Bearer {foreign['access_token']}"}):
        answer = requests.get(url, headers=headers, verify=str(graph.ca.pem))
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
        assert "WWW-Authenticate" in answer.headers


def test_delta_pages_by_maxpagesize_and_select_is_checked(
    client: Any, rep_box: Mailbox
) -> None:
    for n in range(3):
        rep_box.add(Message.from_mime(message(n)))
    prefer = {"Prefer": "odata.maxpagesize=2"}
    path = f"/users/{REP}/mailFolders/inbox/messages/delta?$select=subject"
    first = client("GET", path, headers=prefer)
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=2"
    body = first.json()
    assert [set(v) for v in body["value"]] == [
        {"@odata.type", "@odata.etag", "id", "subject"}
    ] * 2
    last = client("GET", body["@odata.nextLink"], headers=prefer).json()
    assert len(last["value"]) == 1 and "@odata.deltaLink" in last

    wrong = client("GET", f"/users/{REP}/mailFolders/inbox/messages/delta?$select=x")
    assert wrong.status_code == 400
    assert "Could not find a property named 'x'" in wrong.json()["error"]["message"]


def test_immutable_ids_survive_a_move_and_default_ids_do_not(
    client: Any, rep_box: Mailbox
) -> None:
    item = rep_box.add(Message.from_mime(message(1)))
    immutable = {"Prefer": 'IdType="ImmutableId"'}
    path = f"/users/{REP}/mailFolders/{{}}/messages?$select=id"
    before = client("GET", path.format("inbox")).json()["value"][0]["id"]
    kept = client("GET", path.format("inbox"), headers=immutable).json()["value"][0]
    rep_box.move(item, "archive")
    after = client("GET", path.format("archive")).json()["value"][0]["id"]
    moved = client("GET", path.format("archive"), headers=immutable).json()["value"][0]
    assert kept["id"] == moved["id"] == item.id
    assert before != after


def test_a_read_flag_change_is_a_partial_entry_and_a_move_a_removal(
    client: Any, rep_box: Mailbox
) -> None:
    read, moved = (rep_box.add(Message.from_mime(message(n))) for n in (1, 2))
    immutable = {"Prefer": 'IdType="ImmutableId"'}
    path = f"/users/{REP}/mailFolders/inbox/messages/delta?$select=subject"
    link = client("GET", path, headers=immutable).json()["@odata.deltaLink"]
    rep_box.mark_read(read)
    rep_box.move(moved, "archive")
    entries = {
        e["id"]: e for e in client("GET", link, headers=immutable).json()["value"]
    }
    assert entries[read.id] == {
        "@odata.type": "#microsoft.graph.message",
        "@odata.etag": f'W/"{read.change_key}"',
        "id": read.id,
        "isRead": True,
        "parentFolderId": read.folder_id,
    }
    assert entries[moved.id]["@removed"] == {"reason": "deleted"}


def test_a_batch_of_more_than_20_is_refused_and_its_requests_run_four_at_once(
    client: Any, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    many = [
        {"id": str(n), "method": "GET", "url": f"/users/{REP}/mailFolders/inbox"}
        for n in range(21)
    ]
    refused = client("POST", "/$batch", json={"requests": many})
    assert refused.status_code == 400
    graph.latency = 0.05
    answer = client("POST", "/$batch", json={"requests": many[:20]}).json()
    assert sorted(int(r["id"]) for r in answer["responses"]) == list(range(20))
    assert {r["status"] for r in answer["responses"]} == {200}
    assert graph.max_in_flight[REP] == 4


def test_calendar_view_delta_refuses_select_and_needs_a_window(client: Any) -> None:
    base = f"/users/{REP}/calendarView/delta"
    window = "startDateTime=2026-01-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z"
    assert client("GET", f"{base}?{window}").status_code == 200
    assert client("GET", f"{base}?{window}&$select=subject").status_code == 400
    assert client("GET", base).json()["error"]["code"] == "ErrorInvalidParameter"


def test_an_unknown_token_in_a_delta_link_is_gone(
    client: Any, rep_box: Mailbox
) -> None:
    path = f"/users/{REP}/mailFolders/inbox/messages/delta"
    link = client("GET", path).json()["@odata.deltaLink"]
    rep_box.delta.forget()
    gone = client("GET", link)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "SyncStateNotFound"
