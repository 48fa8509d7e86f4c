"""The interface every connector offers the sync core.

A connector lists a mailbox's folders and, for one folder and its stored
cursor, yields :class:`~mailsync.items.ChangeBatch` pages: new or changed items,
removals, rejected items, and the cursor that follows the page. The core stores
each page and its cursor in one transaction, so a connector must make a page's
cursor cover exactly that page and everything before it.

A cursor is opaque to the core. ``None`` means "never synced": the connector
reads the folder from the start (or its back-fill window).

An item that stands for several gives each the provider id
``<parent>#<suffix>`` (a recurring series: ``<master id>#<original start>``
for each occurrence). Removing ``<parent>`` removes its parts too, and the
core applies a page's removals before its items: a connector sends a changed
parent as a removal of its id followed by all its current items, and the
parts that are still there come back. Such a part is not an item of the
mailbox: a connector cannot be asked to write to it.

Optional capabilities, each its own protocol that the core checks with
``isinstance``: :class:`CategoryWriter` writes Outlook categories back;
:class:`ChangeChecker` tells cheaply which folders changed;
:class:`FollowUpWriter` puts follow-up tasks and letter drafts into the
rep's mailbox.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from mailsync.errors import MailsyncError
from mailsync.items import ChangeBatch, Folder, FolderRole, Item


class Connector(Protocol):
    def folders(self) -> list[Folder]:
        """The folders of the mailbox, with their roles."""
        ...

    def changes(self, folder: Folder, cursor: str | None) -> Iterator[ChangeBatch]:
        """Pages of changes since ``cursor``; each carries the cursor after it."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...

    def check(self) -> list[str]:
        """Whether the mailbox answers and the rights suffice: what works, line
        by line, or a UserError that names what is missing."""
        ...


@dataclass
class CategoryWrites:
    """What a category write did: each written item's new change key, and
    why each of the others was not written."""

    change_keys: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class CategoryWriter(Protocol):
    """A connector that can set the Outlook categories of items it yielded."""

    def write_categories(
        self,
        folder: Folder,
        wanted: Mapping[str, tuple[str | None, Sequence[str]]],
    ) -> CategoryWrites:
        """Set each item's categories: ``{provider_id: (change_key, categories)}``.

        ``change_key`` is the one the item had when it was read: an item
        changed since then is not overwritten but reported failed, and comes
        through the next sync with what the rep did. The core calls this after
        it committed a page of ``changes(folder, ...)`` and before it asks for
        the next page; the connector makes the next cursor it yields remember
        the writes, so that they do not come back as changes.
        """
        ...


@runtime_checkable
class ChangeChecker(Protocol):
    """A connector that can tell which folders changed, more cheaply than a
    sync of every folder (an EWS pull subscription, say)."""

    def changed_folders(self, state: str | None) -> tuple[set[str] | None, str]:
        """The ids of the folders that changed since ``state``, and the new state.

        ``state`` is opaque, what the last call gave; ``None`` the first time.
        The folders are ``None`` when the connector cannot tell (no state yet,
        or it lapsed and was renewed in the new state): sync every folder.
        The core saves the new state only after those folders were synced,
        so that a crash checks again from the old one.
        """
        ...


@dataclass(frozen=True)
class FollowUpTask:
    """A reminder for the rep, as a task with its reminder set.

    ``key`` names the condition it is for (see :mod:`mailsync.reminders`),
    the same on every try. ``due`` is the instant the reminder goes off;
    ``zone`` is the rep's IANA time zone, in which ``due`` falls on the
    task's due date. ``contact`` and ``company`` are names for Outlook's
    Contacts and Companies fields ("" for none).
    """

    key: str
    subject: str
    body: str
    due: datetime
    zone: str
    contact: str = ""
    company: str = ""


@dataclass(frozen=True)
class LetterDraft:
    """A letter to a contact: a draft e-mail with the filled .docx attached.

    ``message_id`` is the Message-ID (no angle brackets) the draft is to
    carry, so that the copy in Sent Items, once the rep sends it, is the
    same activity.
    """

    key: str
    subject: str
    body: str
    from_name: str
    from_address: str
    to_name: str
    to_address: str
    filename: str
    content: bytes = field(repr=False)
    message_id: str = ""


class DeliveryUncertain(MailsyncError):
    """A write whose outcome is unknown (no answer came): the item may exist.

    It is not tried again, so that one reminder is never delivered twice.
    """


@runtime_checkable
class FollowUpWriter(Protocol):
    """A connector that can put follow-ups into the rep's mailbox.

    Each method writes one item and returns it as the connector's own sync
    would read it (provider id, folder, task uid, Message-ID), so that the
    core records it as an activity and its later sync is the same activity.
    A failure raises: a TransientError to try again later, a UserError for
    what the admin must fix.
    """

    def save_task(self, task: FollowUpTask) -> Item:
        """Create the task, its reminder set to ``task.due``."""
        ...

    def save_letter(self, letter: LetterDraft) -> Item:
        """Save the draft (not sent) with the letter attached."""
        ...


_ROLES = {
    FolderRole.INBOX: {"inbox"},
    FolderRole.SENT: {
        "sent",
        "sentitems",
        "sentmail",
        "sentmessages",
        "sentmailfolder",
    },
    FolderRole.DRAFTS: {"drafts", "draft"},
    FolderRole.JUNK: {"junk", "junkemail", "junkmail", "spam", "bulkmail"},
    FolderRole.DELETED: {"trash", "deleteditems", "deletedmessages", "deleted", "bin"},
    FolderRole.OUTBOX: {"outbox"},
    FolderRole.CALENDAR: {"calendar"},
    FolderRole.TASKS: {"tasks"},
}


def folder_key(name: str) -> str:
    """A folder name compared loosely: ``Sent Items``, ``sent_items`` agree."""
    return re.sub(r"[^a-z0-9]", "", name.rsplit("/", 1)[-1].lower())


def role_from_name(name: str) -> FolderRole:
    """The role a folder has by its name (the local connector has nothing else)."""
    key = folder_key(name)
    for role, names in _ROLES.items():
        if key in names:
            return role
    return FolderRole.OTHER
