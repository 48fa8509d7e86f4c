"""Identity: one activity per real-world item.

An activity is known by several keys, any of which finds it:

- ``mid:`` the normalised Message-ID;
- ``fp:`` a content fingerprint of author, date, subject and body, which
  merges copies of one message that carry different Message-IDs (a Lotus
  Notes view, a gateway, a sent copy against an inbox copy);
- ``uid:`` an iCalendar UID with its recurrence id, for meetings;
- ``task:`` a task's uid from its connector, and nothing else: the rep edits a
  task's subject and body, and two tasks may read alike.
"""

from __future__ import annotations

import hashlib

from mailsync.items import Item


def fingerprint(author: str | None, item: Item) -> str:
    """A stable hash of who sent it, when, its subject and its body text."""
    when = item.occurred_at.isoformat() if item.occurred_at else ""
    subject = " ".join(item.subject.split()).casefold()
    body = " ".join(item.body_text.split())
    text = "\x1f".join((author or "", when, subject, body))
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def identity_keys(item: Item, author: str | None) -> list[str]:
    """Every key of the item, the strongest first."""
    if item.task is not None:
        if not item.task.uid.strip():
            raise ValueError("a task without its connector's uid")
        return [f"task:{item.task.uid}"]
    keys = []
    if item.meeting is not None:
        keys.append(f"uid:{item.meeting.uid}|{item.meeting.recurrence_id or ''}")
    if item.message_id:
        keys.append(f"mid:{item.message_id}")
    keys.append(f"fp:{fingerprint(author, item)}")
    return keys
