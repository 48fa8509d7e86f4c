"""The real exchangelib against the EWS simulator, over HTTP.

Nothing is patched: exchangelib builds its SOAP requests, sends them to the
simulator on 127.0.0.1 and parses the answers, as it would with Exchange.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from exchangelib import (
    BASIC,
    IMPERSONATION,
    Account,
    Configuration,
    Credentials,
    FaultTolerance,
)
from exchangelib import errors as ews_errors  # noqa: E402
from exchangelib.items import Message, Task  # noqa: E402
from exchangelib.protocol import close_connections  # noqa: E402

from tests.ews.conftest import REP, SERVICE_PASSWORD, SERVICE_USER
from tests.ews.simulator import (
    Address,
    Attendee,
    EwsSimulator,
    MeetingKind,
    Occurrence,
    Recurrence,
    SimCalendarItem,
    SimMailbox,
    SimMeetingMessage,
    SimMessage,
    SimTask,
)

# What a connector asks SyncFolderItems for: the summary properties only.
SYNC_FIELDS = ["subject", "message_id", "is_read", "datetime_received", "item_class"]
# What it asks GetItem for, to build a mailsync item.
FETCH_FIELDS = [
    "subject",
    "author",
    "sender",
    "to_recipients",
    "cc_recipients",
    "bcc_recipients",
    "reply_to",
    "message_id",
    "in_reply_to",
    "references",
    "datetime_sent",
    "datetime_received",
    "categories",
    "sensitivity",
    "body",
    "headers",
]

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
BUYER = Address("ellen.adams@tailspintoys.com", "Ellen Adams")


@pytest.fixture(autouse=True)
def _close_exchangelib_sessions() -> Iterator[None]:
    yield
    close_connections()


def connect(
    sim: EwsSimulator,
    smtp: str = REP,
    password: str = SERVICE_PASSWORD,
    retry_policy: FaultTolerance | None = None,
) -> Account:
    config = Configuration(
        service_endpoint=sim.url,
        credentials=Credentials(SERVICE_USER, password),
        auth_type=BASIC,
        retry_policy=retry_policy,
    )
    return Account(smtp, config=config, autodiscover=False, access_type=IMPERSONATION)


def mail(n: int, **fields: object) -> SimMessage:
    values: dict[str, object] = {
        "subject": f"Quote {n}",
        "author": BUYER,
        "to": (Address(REP, "Tamara Johnston"),),
        "message_id": f"<quote-{n}@tailspintoys.com>",
        "datetime_sent": T0 + timedelta(minutes=n),
        "datetime_received": T0 + timedelta(minutes=n, seconds=5),
        "body": f"Please find quote {n}.",
    }
    values.update(fields)
    return SimMessage(**values)  # type: ignore[arg-type]


def sync(folder: Any, state: str | None = None) -> list[tuple[str, Any]]:
    changes = folder.sync_items(
        sync_state=state, only_fields=SYNC_FIELDS, max_changes_returned=512
    )
    return list(changes)


# ------------------------------------------------------------------ connect


def test_connect_and_walk_the_folder_tree(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add_folder("Tailspin Toys", parent="inbox")
    rep_mailbox.add(mail(1))
    account = connect(ews)

    assert account.inbox.name == "Inbox"
    assert account.inbox.total_count == 1
    tree = {f.absolute: f for f in account.msg_folder_root.walk()}

    top = "/Root/Top of Information Store"
    assert {
        f"{top}/Inbox",
        f"{top}/Sent Items",
        f"{top}/Calendar",
        f"{top}/Tasks",
    } <= set(tree)
    customer = tree[f"{top}/Inbox/Tailspin Toys"]
    assert customer.parent.id == account.inbox.id
    assert not any("Recoverable Items" in path for path in tree)
    assert ews.requests["ConvertId"] == 1
    assert ews.requests["FindFolder"] == 1
    assert ews.requests["GetFolder"] == 5


# --------------------------------------------------------------------- sync


def test_first_sync_pages_1200_messages_then_fetches_them(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add_many(mail(n) for n in range(1200))
    account = connect(ews)
    inbox = account.inbox
    ews.reset_counts()

    changes = sync(inbox)

    assert ews.requests["SyncFolderItems"] == 3
    assert len(changes) == 1200
    assert {kind for kind, _ in changes} == {"create"}
    assert inbox.item_sync_state.startswith("H4sI")
    items = list(account.fetch([item for _, item in changes], only_fields=FETCH_FIELDS))
    assert ews.requests["GetItem"] == 12  # exchangelib's chunk of 100 ids
    first = items[0]
    assert first.subject == "Quote 0"
    assert first.author.email_address == BUYER.email
    assert [r.email_address for r in first.to_recipients] == [REP]
    assert first.message_id == "<quote-0@tailspintoys.com>"
    assert first.datetime_sent == T0
    assert first.body == "Please find quote 0."
    assert any(h.name == "Message-ID" for h in first.headers)


def test_sync_leaves_out_what_sync_folder_items_cannot_return(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add(mail(1, cc=(Address("bob@tailspintoys.com"),)))
    account = connect(ews)

    [(_, item)] = list(
        account.inbox.sync_items(only_fields=["subject", "body", "cc_recipients"])
    )

    assert item.subject == "Quote 1"
    assert item.body is None
    assert item.cc_recipients is None


def test_incremental_sync_sees_create_update_read_flag_and_move(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    old = rep_mailbox.add_many(mail(n) for n in range(4))
    target = rep_mailbox.add_folder("Tailspin Toys", parent="inbox")
    account = connect(ews)
    state = _drain(account.inbox)
    assert sync(account.inbox, state) == []  # up to date: nothing new
    ews.reset_counts()

    new = rep_mailbox.add(mail(9))
    rep_mailbox.update(old[0], subject="Quote 0 (revised)")
    rep_mailbox.mark_read(old[1])
    moved = rep_mailbox.move(old[2], target.folder_id)
    changes = sync(account.inbox, state)

    assert ews.requests["SyncFolderItems"] == 1
    kinds = {_id(item): kind for kind, item in changes}
    assert kinds == {
        new.item_id: "create",
        old[0].item_id: "update",
        old[1].item_id: "read_flag_change",
        old[2].item_id: "delete",
    }
    updated = next(item for kind, item in changes if kind == "update")
    assert updated.subject == "Quote 0 (revised)"
    assert updated.changekey == old[0].change_key
    read = next(item for kind, item in changes if kind == "read_flag_change")
    assert read[1] is True

    [folder] = [f for f in account.inbox.children if f.name == "Tailspin Toys"]
    [(kind, arrived)] = sync(folder)
    assert kind == "create"
    assert arrived.id == moved.item_id != old[2].item_id
    assert arrived.subject == "Quote 2"


def test_fetching_a_moved_item_by_its_old_id_finds_nothing(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    item = rep_mailbox.add(mail(1))
    old_id = item.item_id
    rep_mailbox.delete(item)  # soft: into Deleted Items, under a new ItemId
    account = connect(ews)

    [result] = list(account.fetch([(old_id, None)], only_fields=["subject"]))

    assert isinstance(result, ews_errors.ErrorItemNotFound)
    assert account.trash.total_count == 1


def test_paging_reports_each_item_once_in_its_current_state(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    items = rep_mailbox.add_many(mail(n) for n in range(5))
    rep_mailbox.update(items[0], subject="Quote 0 (revised)")
    rep_mailbox.delete(items[1], hard=True)
    account = connect(ews)

    changes = list(
        account.inbox.sync_items(only_fields=SYNC_FIELDS, max_changes_returned=2)
    )

    assert ews.requests["SyncFolderItems"] == 2
    assert [kind for kind, _ in changes] == ["create"] * 4
    subjects = [item.subject for _, item in changes]
    assert subjects == ["Quote 0 (revised)", "Quote 2", "Quote 3", "Quote 4"]


def _drain(folder: Any) -> str:
    for _ in sync(folder):
        pass
    return str(folder.item_sync_state)


def _id(item: Any) -> str:
    if isinstance(item, tuple):  # a read flag change is (ItemId, is_read)
        return str(item[0].id)
    return str(item.id)


# ------------------------------------------------------------------- faults


def test_server_busy_is_raised_with_its_back_off_by_default(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add(mail(1))
    account = connect(ews)
    inbox = account.inbox
    rep_mailbox.faults.server_busy(back_off_ms=250, operation="SyncFolderItems")

    with pytest.raises(ews_errors.ErrorServerBusy) as raised:
        sync(inbox)

    assert raised.value.back_off == 0.25
    assert ews.requests["SyncFolderItems"] == 1
    assert len(sync(inbox)) == 1


def test_server_busy_is_retried_after_the_back_off_with_fault_tolerance(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add_many(mail(n) for n in range(3))
    account = connect(ews, retry_policy=FaultTolerance(max_wait=10))
    inbox = account.inbox
    rep_mailbox.faults.server_busy(times=2, back_off_ms=60, operation="SyncFolderItems")

    started = time.monotonic()
    changes = sync(inbox)

    assert len(changes) == 3
    assert ews.requests["SyncFolderItems"] == 3
    assert time.monotonic() - started >= 0.12


def test_server_busy_in_a_response_message_ignores_the_back_off_value(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    account = connect(ews)
    inbox = account.inbox
    rep_mailbox.faults.server_busy(
        back_off_ms=250, operation="SyncFolderItems", in_response=True
    )

    with pytest.raises(ews_errors.ErrorServerBusy) as raised:
        sync(inbox)

    # exchangelib reads BackOffMilliseconds only from a SOAP fault; here it
    # falls back on its own RETRY_WAIT.
    assert raised.value.back_off == account.protocol.RETRY_WAIT


def test_invalid_sync_state_raises_error_invalid_sync_state_data(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add(mail(1))
    account = connect(ews)
    state = _drain(account.inbox)
    rep_mailbox.invalid_sync_states.add(state)

    with pytest.raises(ews_errors.ErrorInvalidSyncStateData):
        sync(account.inbox, state)
    with pytest.raises(ews_errors.ErrorInvalidSyncStateData):
        sync(account.inbox, "bm90IGEgc3luYyBzdGF0ZQ==")
    with pytest.raises(ews_errors.ErrorInvalidSyncStateData):
        sync(account.sent, _drain(account.inbox))  # another folder's state


def test_a_mailbox_move_invalidates_every_sync_state(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    account = connect(ews)
    state = _drain(account.inbox)
    rep_mailbox.reset_sync_states()

    with pytest.raises(ews_errors.ErrorInvalidSyncStateData):
        sync(account.inbox, state)


def test_http_500_surfaces_as_server_busy_then_recovers(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add(mail(1))
    account = connect(ews)
    inbox = account.inbox
    rep_mailbox.faults.http_error(times=1, status=500)

    with pytest.raises(ews_errors.ErrorServerBusy):
        sync(inbox)
    assert len(sync(inbox)) == 1
    assert [c.status for c in ews.calls if c.operation == "SyncFolderItems"] == [
        500,
        200,
    ]


def test_http_500_is_retried_with_fault_tolerance(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add(mail(1))
    account = connect(ews, retry_policy=FaultTolerance(max_wait=10))
    account.protocol.RETRY_WAIT = 0.05  # exchangelib's wait when the server names none
    inbox = account.inbox
    rep_mailbox.faults.http_error(times=2, status=500, operation="SyncFolderItems")

    assert len(sync(inbox)) == 1
    assert ews.requests["SyncFolderItems"] == 3


def test_a_cut_connection_raises_error_timeout_expired(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add_many(mail(n) for n in range(20))
    account = connect(ews, retry_policy=FaultTolerance(max_wait=10))
    inbox = account.inbox
    rep_mailbox.faults.cut(operation="SyncFolderItems")

    # Even with FaultTolerance: exchangelib retries a broken connection only
    # when it can shrink its session pool, which starts at one session.
    with pytest.raises(ews_errors.ErrorTimeoutExpired):
        sync(inbox)
    assert len(sync(inbox)) == 20


def test_a_slow_answer_arrives_late_or_times_out(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add(mail(1))
    account = connect(ews)
    inbox = account.inbox
    rep_mailbox.faults.slow(0.3, operation="SyncFolderItems")

    started = time.monotonic()
    assert len(sync(inbox)) == 1
    assert time.monotonic() - started >= 0.3

    account.protocol.TIMEOUT = 0.2
    rep_mailbox.faults.slow(1.0, operation="GetItem")
    with pytest.raises(ews_errors.ErrorTimeoutExpired):
        list(
            account.fetch(
                [rep_mailbox.folder_items(rep_mailbox.folder("inbox"))[0].item_id]
            )
        )


def test_a_bad_password_is_http_401(ews: EwsSimulator) -> None:
    account = connect(ews, password="wrong")

    with pytest.raises(ews_errors.UnauthorizedError):
        account.root  # noqa: B018 (the first request is made here)

    assert [c.status for c in ews.calls] == [401]


def test_a_bad_password_under_fault_tolerance_looks_like_throttling(
    ews: EwsSimulator,
) -> None:
    # FaultTolerance takes a 401 for throttling and backs off RETRY_WAIT (10 s,
    # doubling) until max_wait; past max_wait it gives up with RateLimitError.
    account = connect(ews, password="wrong", retry_policy=FaultTolerance(max_wait=1))

    with pytest.raises(ews_errors.RateLimitError):
        account.root  # noqa: B018

    assert [c.status for c in ews.calls] == [401]


def test_each_mailbox_has_its_own_folders_and_items(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    other = ews.add_mailbox("ben@contoso.com", "Ben Smith")
    other.add(mail(1))
    rep_mailbox.add(mail(2))

    tamara, ben = connect(ews), connect(ews, "ben@contoso.com")

    assert [i.subject for _, i in sync(tamara.inbox)] == ["Quote 2"]
    assert [i.subject for _, i in sync(ben.inbox)] == ["Quote 1"]
    assert tamara.inbox.id != ben.inbox.id
    assert {c.mailbox for c in ews.calls} == {None, REP, "ben@contoso.com"}


def test_impersonation_refused_for_one_mailbox(ews: EwsSimulator) -> None:
    ews.add_mailbox("ceo@contoso.com", "The CEO").allow_impersonation = False

    with pytest.raises(ews_errors.ErrorImpersonateUserDenied):
        connect(ews, "ceo@contoso.com").root  # noqa: B018
    with pytest.raises(ews_errors.ErrorNonExistentMailbox):
        connect(ews, "nobody@contoso.com").root  # noqa: B018
    assert connect(ews).root.name == "Root"


# ---------------------------------------------------------------- addresses


def test_an_x500_sender_resolves_to_smtp(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    legacy_dn = (
        "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
        "/cn=Recipients/cn=5f2b1c0a9e8d4b3aa1c2d3e4f5a6b7c8-kim"
    )
    colleague = ews.directory.add(
        "kim.abercrombie@contoso.com", "Kim Abercrombie", legacy_dn
    )
    rep_mailbox.add(mail(1, author=colleague, sender=colleague))
    account = connect(ews)

    [item] = list(
        account.fetch(_all_ids(rep_mailbox), only_fields=["author", "mime_content"])
    )

    assert item.author.routing_type == "EX"
    assert item.author.email_address == legacy_dn
    [resolved] = account.protocol.resolve_names([item.author.email_address])
    assert resolved.email_address == "kim.abercrombie@contoso.com"
    assert resolved.routing_type == "SMTP"
    assert b"From: Kim Abercrombie <kim.abercrombie@contoso.com>" in item.mime_content
    [unknown] = account.protocol.resolve_names(
        ["/o=ExchangeLabs/cn=Recipients/cn=gone"]
    )
    assert isinstance(unknown, ews_errors.ErrorNameResolutionNoResults)
    assert ews.requests["ResolveNames"] == 2


def _all_ids(mailbox: SimMailbox, folder: str = "inbox") -> list[tuple[str, str]]:
    return [
        (i.item_id, i.change_key) for i in mailbox.folder_items(mailbox.folder(folder))
    ]


# ----------------------------------------------------------- MIME, meetings


def test_mime_content_and_threading_headers(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    raw = (
        b"From: Ellen Adams <ellen.adams@tailspintoys.com>\r\n"
        b"To: Tamara Johnston <tamara@contoso.com>\r\n"
        b"Subject: RE: Quote 7\r\n"
        b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
        b"Message-ID: <reply-7@tailspintoys.com>\r\n"
        b"In-Reply-To: <quote-7@contoso.com>\r\n"
        b"References: <rfq-7@tailspintoys.com> <quote-7@contoso.com>\r\n"
        b"List-Id: <buyers.tailspintoys.com>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"Looks good.\r\n"
    )
    rep_mailbox.add(
        SimMessage.from_mime(raw, categories=("Tailspin",), sensitivity="Private")
    )
    account = connect(ews)

    fields = [*FETCH_FIELDS, "mime_content"]
    [item] = list(account.fetch(_all_ids(rep_mailbox), only_fields=fields))

    assert item.mime_content == raw
    assert item.in_reply_to == "<quote-7@contoso.com>"
    assert item.references == "<rfq-7@tailspintoys.com> <quote-7@contoso.com>"
    assert item.categories == ["Tailspin"]
    assert item.sensitivity == "Private"
    assert {"List-Id": "<buyers.tailspintoys.com>"}.items() <= {
        h.name: h.value for h in item.headers
    }.items()


def test_calendar_items_and_meeting_messages(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    start = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)
    series = rep_mailbox.add(
        SimCalendarItem(
            subject="Weekly check-in",
            uid="040000008200E00074C5B7101A82E00800000000DEADBEEF",
            start=start,
            end=start + timedelta(minutes=30),
            organizer=Address(REP, "Tamara Johnston"),
            required=(Attendee(BUYER, "Accept"),),
            optional=(Attendee(Address("bob@tailspintoys.com"), "Tentative"),),
            recurrence=Recurrence(
                start=date(2026, 3, 9), days_of_week=("Monday",), count=10
            ),
            modified_occurrences=(
                Occurrence(
                    original_start=start + timedelta(days=7),
                    start=start + timedelta(days=7, hours=1),
                    end=start + timedelta(days=7, hours=1, minutes=30),
                ),
            ),
            deleted_occurrences=(start + timedelta(days=14),),
        ),
        "calendar",
    )
    rep_mailbox.add(
        SimMeetingMessage(
            kind=MeetingKind.REQUEST,
            subject="Weekly check-in",
            author=Address(REP, "Tamara Johnston"),
            uid=series.uid if isinstance(series, SimCalendarItem) else "",
            start=start,
            end=start + timedelta(minutes=30),
            organizer=Address(REP, "Tamara Johnston"),
            required=(Attendee(BUYER),),
            associated_calendar_item_id=series.item_id,
        ),
        "sentitems",
    )
    account = connect(ews)

    [(_, summary)] = list(
        account.calendar.sync_items(only_fields=["subject", "uid", "start"])
    )
    [meeting] = list(account.fetch([summary]))
    assert meeting.uid == "040000008200E00074C5B7101A82E00800000000DEADBEEF"
    assert meeting.type == "RecurringMaster"
    assert meeting.organizer.email_address == REP
    assert [
        (a.mailbox.email_address, a.response_type) for a in meeting.required_attendees
    ] == [(BUYER.email, "Accept")]
    assert meeting.optional_attendees[0].response_type == "Tentative"
    assert meeting.recurrence.boundary.number == 10
    assert len(meeting.modified_occurrences) == 1
    assert meeting.deleted_occurrences[0].start == start + timedelta(days=14)
    [exception] = list(account.fetch([meeting.modified_occurrences[0]]))
    assert exception.type == "Exception"
    assert exception.start == start + timedelta(days=7, hours=1)

    [(_, request)] = list(account.sent.sync_items(only_fields=["subject"]))
    [request] = list(account.fetch([request], only_fields=["mime_content", "start"]))
    assert type(request).__name__ == "MeetingRequest"
    assert request.start == start
    assert b"text/calendar" in request.mime_content
    assert (
        b"UID:040000008200E00074C5B7101A82E00800000000DEADBEEF" in request.mime_content
    )


# ------------------------------------------------------------- writing back


def test_create_update_and_move_through_exchangelib(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    account = connect(ews)
    due = datetime(2026, 3, 16, 9, 0, tzinfo=UTC)

    task = Task(account=account, folder=account.tasks, subject="Follow up with Ellen")
    task.due_date = due.date()
    task.save()
    draft = Message(
        account=account, folder=account.drafts, subject="Thank you", body="Hi"
    )
    draft.to_recipients = [BUYER.email]
    draft.save()

    [stored_task] = rep_mailbox.folder_items(rep_mailbox.folder("tasks"))
    assert isinstance(stored_task, SimTask)
    assert stored_task.subject == "Follow up with Ellen"
    [stored_draft] = rep_mailbox.folder_items(rep_mailbox.folder("drafts"))
    assert isinstance(stored_draft, SimMessage) and stored_draft.is_draft
    assert [a.email for a in stored_draft.to] == [BUYER.email]

    old_key = task.changekey
    task.subject = "Follow up with Ellen (call)"
    task.save(update_fields=["subject"])
    assert task.changekey != old_key
    assert rep_mailbox.get(task.id).subject == "Follow up with Ellen (call)"

    old_id = draft.id
    draft.move(account.trash)
    assert draft.id != old_id
    assert (
        rep_mailbox.get(draft.id).folder_id
        == rep_mailbox.folder("deleteditems").folder_id
    )
    assert ews.requests["CreateItem"] == 2
    assert ews.requests["UpdateItem"] == 1
    assert ews.requests["MoveItem"] == 1


def test_sync_hierarchy_reports_a_new_folder(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    account = connect(ews)
    root = account.msg_folder_root
    first = list(root.sync_hierarchy())
    assert {kind for kind, _ in first} == {"create"}

    rep_mailbox.add_folder("Fabrikam", parent="inbox")
    [(kind, folder)] = list(root.sync_hierarchy(sync_state=root.folder_sync_state))

    assert (kind, folder.name) == ("create", "Fabrikam")


def test_requests_are_counted_by_operation(ews: EwsSimulator) -> None:
    account = connect(ews)
    account.inbox.refresh()

    # The version probe, then GetFolder for root, inbox and the refresh.
    assert ews.requests == {"ConvertId": 1, "GetFolder": 3}
    assert all(c.mailbox in (None, REP) for c in ews.calls)
