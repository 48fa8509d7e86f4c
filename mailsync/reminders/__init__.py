"""Follow-ups: the rules that read the history, and what they produce.

Words used here (see also shared/DESIGN.md):

- **rule**: ``no_reply``, ``after_meeting``, ``check_in`` or
  ``dormant_account``; each is switched and tuned in ``[followups.<rule>]``.
- **condition**: one fact a rule found, named by a **key**: an e-mail nobody
  answered (``no_reply:<activity>``), a meeting held (``after_meeting:...``),
  a check-in's turn, an account quiet for a period. A key is unique in the
  ``reminders`` table, so that one condition gives at most one reminder
  after any restart, crash or resync.
- **reminder**: what a condition gives a rep, due at a time: a task in the
  rep's mailbox (``kind = "task"``), or a letter drafted from a template
  (``kind = "letter"``). Its status is pending, delivering, delivered,
  cancelled (the condition went away: a reply came, the meeting was
  cancelled), removed (by hand), missed (a check-in's turn that passed while
  the service was down, beyond the grace time) or failed.
- **delivery**: a reminder written into the rep's mailbox by a connector
  that can (:class:`~mailsync.connectors.base.FollowUpWriter`), then recorded
  as an activity of the history like any task or mail.

Modules: :mod:`.workdays` (business days in a rep's zone), :mod:`.rules`
(deciding: what each rule wants, from facts), :mod:`.evaluate` (reading the
facts and writing the reminders), :mod:`.letters` (.docx templates),
:mod:`.deliver` (delivering due reminders), :mod:`.checkins` (schedules),
:mod:`.scheduler` (APScheduler), :mod:`.views` (listing and the .ics feed).
"""
