"""The local connector (``kind = "local"``): mail read from files.

Three layouts, told apart by what ``path`` is:

- an **mbox** file: one folder, named after the file;
- a **maildir** (it has ``cur/`` or ``new/``): the top is the Inbox and each
  Maildir++ subfolder (``.Sent``, ``.Sent.2026``) is a folder of its own;
- a **tree** of RFC 822 files, one message per file with any name (the CMU
  Enron layout ``<person>/<folder>/<n>_``): every directory that holds files is
  a folder, named by its path under ``path``.

The cursor of a folder is the list of files already read, each with its size
and modification time, so a second run reads only new and changed files and
reports the files that went away as removed. Names starting with a dot are
never messages (``.gitkeep``, ``.DS_Store``, Dovecot's index files).

A message larger than ``max_message_mb`` is not read (parsing takes several
times its size in memory) but rejected, once: it is in the cursor with its
stamp and marked oversize, so it is read when it changes, or at the next
cycle after the limit was raised above its size.

Follow-ups (:class:`~mailsync.connectors.base.FollowUpWriter`) go to the
``outbox`` folder: a task is an ``.ics`` file with a VTODO and its VALARM; a
letter is the ``.docx`` and an ``.eml`` draft with it attached (marked
``X-Unsent: 1``, which Outlook opens as a draft to send). File names come
from the follow-up's key, so a second try writes the same files again
instead of new ones.
"""

from __future__ import annotations

import hashlib
import json
import mailbox
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from mailsync.connectors.base import FollowUpTask, LetterDraft, role_from_name
from mailsync.errors import ParseError, UserError
from mailsync.items import (
    ChangeBatch,
    Folder,
    FolderRole,
    Item,
    ItemKind,
    RejectedItem,
    Task,
)
from mailsync.mime import parse_message

_ROOT = "."
_MB = 1024 * 1024


@dataclass(frozen=True)
class _Entry:
    key: str
    path: Path
    stamp: tuple[int, int]  # (mtime_ns, size)
    flags: str = ""
    not_mail: str | None = None  # why this entry cannot be a message file


class _Read(Enum):
    """What became of one file: in the cursor or not, and marked oversize."""

    DONE = "done"  # read, or rejected for good
    TOO_LARGE = "too large"  # rejected until it shrinks or the limit is raised
    FAILED = "failed"  # not in the cursor: tried again next cycle


class LocalConnector:
    def __init__(
        self,
        path: Path,
        batch_size: int = 500,
        outbox: Path | None = None,
        max_message_mb: float = 64,
    ) -> None:
        if not path.exists():
            raise UserError(
                f"mailbox path {str(path)!r} does not exist; set `path` of the "
                "mailbox to a maildir, an mbox file or a folder of messages"
            )
        _require_mounted(path)
        self.path = path
        self.batch_size = batch_size
        self.max_message_mb = max_message_mb
        self.max_bytes = int(max_message_mb * _MB)
        self.outbox = outbox if outbox is not None else path.parent / "outbox"
        if path.is_file():
            self.layout = "mbox"
        elif (path / "cur").is_dir() or (path / "new").is_dir():
            self.layout = "maildir"
        else:
            self.layout = "tree"

    def close(self) -> None:
        pass

    def check(self) -> list[str]:
        """What can be read, line by line."""
        folders = self.folders()
        if not folders:
            raise UserError(
                f"{self.path}: no messages found; point `path` at a maildir, an mbox "
                "file or a folder of message files"
            )
        return [f"{self.layout} at {self.path}", f"{len(folders)} folders found"]

    # --- folders -----------------------------------------------------------

    def folders(self) -> list[Folder]:
        # Checked each cycle: a share unmounted under an open connector would
        # otherwise list no files, and every message would be removed.
        _require_mounted(self.path)
        if self.layout == "mbox":
            return [
                Folder(self.path.name, self.path.stem, role_from_name(self.path.stem))
            ]
        if self.layout == "maildir":
            return self._maildir_folders()
        return self._tree_folders()

    def _maildir_folders(self) -> list[Folder]:
        found = [Folder(_ROOT, "Inbox", FolderRole.INBOX)]
        for child in sorted(self.path.iterdir()):
            if (
                child.name.startswith(".")
                and child.name not in (".", "..")
                and ((child / "cur").is_dir() or (child / "new").is_dir())
            ):
                name = child.name[1:].replace(".", "/")
                found.append(Folder(child.name, name, role_from_name(name)))
        return found

    def _tree_folders(self) -> list[Folder]:
        found = []
        for current, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if any(not f.startswith(".") for f in files):
                relative = Path(current).relative_to(self.path).as_posix()
                name = self.path.name if relative == _ROOT else relative
                found.append(Folder(relative, name, role_from_name(name)))
        return found

    # --- changes -----------------------------------------------------------

    def changes(self, folder: Folder, cursor: str | None) -> Iterator[ChangeBatch]:
        if self.layout == "mbox":
            yield from self._mbox_changes(folder, cursor)
            return
        listing = self._listing(folder)
        saved = json.loads(cursor) if cursor else {}
        state: dict[str, list[int]] = saved.get("files", {})
        oversize: set[str] = set(saved.get("oversize", ()))
        todo = [e for e in listing.values() if self._due(e, state, oversize)]
        todo.sort(key=lambda e: _natural(e.key))
        gone = sorted(k for k in state if k not in listing)

        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            batch = ChangeBatch(folder)
            for entry in chunk:
                outcome = self._read(entry, folder, batch)
                # A file that could not be read is left out of the cursor, so
                # the next cycle tries it again (a permission fixed, a disk back).
                if outcome is not _Read.FAILED:
                    state[entry.key] = list(entry.stamp)
                if outcome is _Read.TOO_LARGE:
                    oversize.add(entry.key)
                else:
                    oversize.discard(entry.key)
            batch.cursor = _dump(state, oversize)
            yield batch
        if gone:
            for key in gone:
                del state[key]
            oversize.difference_update(gone)
            removed = [_provider_id(folder, key) for key in gone]
            yield ChangeBatch(folder, removed=removed, cursor=_dump(state, oversize))

    def _due(
        self, entry: _Entry, state: dict[str, list[int]], oversize: set[str]
    ) -> bool:
        """New or changed since the cursor, or too large then and not now."""
        if tuple(state.get(entry.key, ())) != entry.stamp:
            return True
        return entry.key in oversize and entry.stamp[1] <= self.max_bytes

    def _listing(self, folder: Folder) -> dict[str, _Entry]:
        base = self.path / folder.id if folder.id != _ROOT else self.path
        if self.layout == "maildir":
            return _maildir_listing(base)
        return _plain_listing(base)

    def _read(self, entry: _Entry, folder: Folder, batch: ChangeBatch) -> _Read:
        """Read one file into the batch, or reject it with the reason."""
        provider_id = _provider_id(folder, entry.key)
        if entry.not_mail:
            reason = f"{entry.path} is {entry.not_mail}"
            batch.rejected.append(RejectedItem(provider_id, folder, reason))
            return _Read.DONE
        if entry.stamp[1] > self.max_bytes:  # judged before a byte is read
            reason = self._too_large(str(entry.path), entry.stamp[1])
            batch.rejected.append(RejectedItem(provider_id, folder, reason))
            return _Read.TOO_LARGE
        try:
            data = entry.path.read_bytes()
        except OSError as exc:
            reason = f"cannot read {entry.path}: {exc.strerror or exc}"
            batch.rejected.append(RejectedItem(provider_id, folder, reason))
            return _Read.FAILED
        try:
            item = parse_message(data, provider_id, folder)
        except ParseError as exc:
            batch.rejected.append(RejectedItem(provider_id, folder, str(exc)))
            return _Read.DONE
        _apply_flags(item, entry.flags)
        if item.received_at is None:  # no Received header: the file's time
            item.received_at = datetime.fromtimestamp(entry.stamp[0] / 1e9, UTC)
        batch.items.append(item)
        return _Read.DONE

    def _too_large(self, what: str, size: int) -> str:
        return (
            f"{what} is {size / _MB:.1f} MB, more than max_message_mb "
            f"({self.max_message_mb:g}); raise max_message_mb for this mailbox "
            "to read it"
        )

    # --- mbox --------------------------------------------------------------

    def _mbox_changes(
        self, folder: Folder, cursor: str | None
    ) -> Iterator[ChangeBatch]:
        """The whole file is read again when it changed; the cursor holds its
        stamp, the ids of its messages and the sizes of those too large."""
        stat = self.path.stat()
        stamp = [stat.st_mtime_ns, stat.st_size]
        state = json.loads(cursor) if cursor else {"stamp": None, "ids": []}
        oversize: dict[str, int] = state.get("oversize", {})
        fits = {pid for pid, size in oversize.items() if size <= self.max_bytes}
        if state["stamp"] == stamp and not fits:
            return
        batch = ChangeBatch(folder)
        current, still_oversize = self._mbox_read(
            folder, set(state["ids"]) - fits, oversize, batch
        )
        still_there = set(current)
        batch.removed = [pid for pid in state["ids"] if pid not in still_there]
        batch.cursor = _mbox_cursor(stamp, current, still_oversize)
        yield batch

    def _mbox_read(
        self,
        folder: Folder,
        known: set[str],
        oversize: dict[str, int],
        batch: ChangeBatch,
    ) -> tuple[list[str], dict[str, int]]:
        """Read the messages not known into the batch; the ids of all, and
        the sizes of those too large."""
        current: list[str] = []
        too_large: dict[str, int] = {}
        repeats: Counter[str] = Counter()
        box = mailbox.mbox(self.path, create=False)
        try:
            for number, key in enumerate(box.iterkeys(), start=1):
                digest, size, data = _mbox_message(box, key, self.max_bytes)
                provider_id = _mbox_id(digest, repeats)
                current.append(provider_id)
                if data is None and (
                    provider_id not in known or provider_id in oversize
                ):
                    too_large[provider_id] = size
                if provider_id in known:
                    continue
                if data is None:
                    what = f"message {number} in {self.path}"
                    reason = self._too_large(what, size)
                    batch.rejected.append(RejectedItem(provider_id, folder, reason))
                else:
                    _read_bytes(data, provider_id, folder, batch)
        finally:
            box.close()
        return current, too_large

    # --- follow-ups -------------------------------------------------------

    def save_task(self, task: FollowUpTask) -> Item:
        """The task as ``<key hash>.ics``: a VTODO due at ``task.due`` with a
        display alarm then."""
        from mailsync.calendar import calendar_of, todo

        stem = _stem(task.key)
        uid = f"{stem}@mailsync"
        created = datetime.now(UTC)
        entry = todo(uid, task.subject, task.body, task.due, created, task.contact)
        self._write(f"{stem}.ics", calendar_of([entry]))
        return Item(
            provider_id=f"{OUTBOX.id}/{stem}.ics",
            folder=OUTBOX,
            kind=ItemKind.TASK,
            subject=task.subject,
            occurred_at=created,
            participants=[],
            body_text=task.body,
            task=Task(
                uid=uid,
                status="NotStarted",
                due=task.due,
                contacts=(task.contact,) if task.contact else (),
                companies=(task.company,) if task.company else (),
            ),
        )

    def save_letter(self, letter: LetterDraft) -> Item:
        """The letter as its .docx, and an .eml draft with it attached."""
        stem = _stem(letter.key)
        self._write(f"{stem}.docx", letter.content)
        draft = _draft(letter)
        self._write(f"{stem}.eml", draft)
        item = parse_message(draft, f"{OUTBOX.id}/{stem}.eml", OUTBOX)
        item.is_draft = True
        return item

    def _write(self, name: str, data: bytes) -> None:
        """Write a file whole or not at all (a crash leaves no half file)."""
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            partial = self.outbox / f".{name}.part"
            partial.write_bytes(data)
            os.replace(partial, self.outbox / name)
        except OSError as exc:
            raise UserError(
                f"cannot write to the outbox {self.outbox}: "
                f"{exc.strerror or exc}; set `outbox` of the mailbox to a "
                "folder mailsync may write"
            ) from None


OUTBOX = Folder("@outbox", "Outbox", FolderRole.OTHER)


def _require_mounted(path: Path) -> None:
    """A directory with nothing at all in it is a share not mounted, not an
    empty mailbox: a new maildir has its cur, new and tmp."""
    if not path.is_dir():
        return
    with os.scandir(path) as children:
        if next(children, None) is None:
            raise UserError(
                f"path {path} is an empty directory: is the share mounted? "
                "(a new maildir has cur, new and tmp)"
            )


def _stem(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _draft(letter: LetterDraft) -> bytes:
    from email.message import EmailMessage
    from email.utils import format_datetime, formataddr

    message = EmailMessage()
    message["From"] = formataddr((letter.from_name, letter.from_address))
    message["To"] = formataddr((letter.to_name, letter.to_address))
    message["Subject"] = letter.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    if letter.message_id:
        message["Message-ID"] = f"<{letter.message_id}>"
    message["X-Unsent"] = "1"
    message.set_content(letter.body)
    message.add_attachment(
        letter.content,
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename=letter.filename,
    )
    return message.as_bytes()


def _maildir_listing(base: Path) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    for sub in ("new", "cur"):
        directory = base / sub
        if not directory.is_dir():
            continue
        for child in os.scandir(directory):
            if child.name.startswith("."):
                continue
            # "unique:2,FLAGS" ("!" on file systems that forbid ":"); the flags
            # change when the rep reads or flags the message, the unique part not.
            unique, info = _split_maildir_name(child.name)
            entries[unique] = _entry(child, unique, info)
    return entries


def _entry(child: os.DirEntry[str], key: str, flags: str = "") -> _Entry:
    """A listed file; one that cannot hold a message (a FIFO, a dangling
    link, a directory) says why, so that it is reported, never opened."""
    if child.is_file():
        stat = child.stat()
        return _Entry(key, Path(child.path), (stat.st_mtime_ns, stat.st_size), flags)
    stat = child.stat(follow_symlinks=False)
    stamp = (stat.st_mtime_ns, stat.st_size)
    if child.is_symlink():
        target = os.readlink(child.path)
        why = f"a link to {target}, which does not exist; remove the link"
    elif child.is_dir():
        why = "a directory where message files belong; move it out"
    else:
        why = (
            f"not a regular file ({_file_kind(stat.st_mode)}); mail must be "
            "plain files, remove it"
        )
    return _Entry(key, Path(child.path), stamp, flags, not_mail=why)


def _file_kind(mode: int) -> str:
    import stat

    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


_INFO = re.compile(r"[:!]2,")


def _split_maildir_name(name: str) -> tuple[str, str]:
    """The unique part and the flags of a maildir file name."""
    parts = _INFO.split(name, maxsplit=1)
    unique = re.split(r"[:!]", parts[0], maxsplit=1)[0]
    return unique, parts[1] if len(parts) > 1 else ""


def _plain_listing(base: Path) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    for child in os.scandir(base):
        # Directories are folders of their own here.
        if child.name.startswith(".") or child.is_dir():
            continue
        entries[child.name] = _entry(child, child.name)
    return entries


def _apply_flags(item: Item, flags: str) -> None:
    if "D" in flags:  # the maildir "draft" flag
        item.is_draft = True


def _read_bytes(
    data: bytes, provider_id: str, folder: Folder, batch: ChangeBatch
) -> None:
    try:
        batch.items.append(parse_message(data, provider_id, folder))
    except ParseError as exc:
        batch.rejected.append(RejectedItem(provider_id, folder, str(exc)))


def _mbox_message(
    box: mailbox.mbox, key: str, limit: int
) -> tuple[str, int, bytes | None]:
    """A message's content hash and size, and its bytes if it is within
    ``limit``; one larger is hashed piece by piece, never held whole."""
    handle = box.get_file(key)
    try:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size <= limit:
            data = box.get_bytes(key)
            return hashlib.sha1(data).hexdigest()[:24], size, data
        handle.seek(0)
        digest = hashlib.sha1()
        while piece := handle.read(_MB):
            digest.update(piece)
        return digest.hexdigest()[:24], size, None
    finally:
        handle.close()


def _mbox_cursor(stamp: list[int], ids: list[str], oversize: dict[str, int]) -> str:
    state: dict[str, object] = {"stamp": stamp, "ids": ids}
    if oversize:
        state["oversize"] = oversize
    return json.dumps(state)


def _mbox_id(digest: str, repeats: Counter[str]) -> str:
    """A message's id in an mbox: its content hash, numbered if repeated."""
    count = repeats[digest]
    repeats[digest] += 1
    return digest if count == 0 else f"{digest}#{count}"


def _provider_id(folder: Folder, key: str) -> str:
    return f"{folder.id}/{key}"


def _dump(state: dict[str, list[int]], oversize: set[str]) -> str:
    cursor: dict[str, object] = {"files": state}
    if oversize:
        cursor["oversize"] = sorted(oversize)
    return json.dumps(cursor, separators=(",", ":"), sort_keys=True)


def _natural(name: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
