"""The TOML configuration, validated.

The file is found by ``--config``, then ``MAILSYNC_CONFIG``, then
``config/mailsync.toml``. Relative paths in it are taken from the working
directory. A wrong key or value is a :class:`ConfigError` that names the key and
says what is allowed.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailsync.errors import ConfigError

DEFAULT_PATH = Path("config/mailsync.toml")

DEFAULT_EXCLUDED_FOLDERS = [
    "Junk",
    "Junk E-mail",
    "Junk Email",
    "Spam",
    "Deleted Items",
    "Trash",
    "Outbox",
    "Sync Issues",
]


Lax = Field(strict=False)


class Strict(BaseModel):
    # strict: "yes" is not a boolean and "500" not a number. Paths and enums
    # come as strings from TOML, so those fields are marked Lax.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatabaseConfig(Strict):
    url: str = "sqlite:///mailsync.db"


class ContactPolicy(StrEnum):
    """Whether mailsync creates Business Contacts on its own."""

    NEVER = "never"
    WRITTEN_TO = "written_to"


class OrganisationConfig(Strict):
    internal_domains: list[str] = Field(min_length=1)
    relay_senders: list[str] = []

    @field_validator("internal_domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        # "@contoso.com", "*.contoso.com" and "contoso.com." all mean
        # contoso.com (its subdomains are always included).
        domains = [
            v.strip().lower().removeprefix("@").removeprefix("*.").rstrip(".")
            for v in values
        ]
        for domain in domains:
            if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", domain):
                raise ValueError(
                    f"{domain!r} is not a domain; write it like contoso.com"
                )
        return domains

    @field_validator("relay_senders")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [v.strip().lower() for v in values]


class LinkingConfig(Strict):
    record_internal: bool = False
    record_drafts: bool = False
    record_private: bool = False
    private_sensitivities: list[str] = ["private", "company-confidential"]
    free_mail_domains: list[str] = []
    noreply_patterns: list[str] = []
    create_contacts: Annotated[ContactPolicy, Lax] = ContactPolicy.NEVER

    @field_validator("free_mail_domains", "private_sensitivities")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [v.strip().lower() for v in values]

    @field_validator("noreply_patterns")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        for pattern in values:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"{pattern!r} is not a regular expression: {exc}"
                ) from None
        return values


class CategoriesConfig(Strict):
    """The Outlook categories mailsync writes and reads.

    ``link`` is the category a linked item gets for each of its accounts, a
    format with ``{account}`` (``""`` writes none); ``opt_out`` is the
    category by which a rep keeps an item out of the history.
    """

    link: str = "{account}"
    opt_out: str = "Don't track"

    @field_validator("link")
    @classmethod
    def _link(cls, value: str) -> str:
        if value == "":
            return value
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value)}
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a category format ({exc}); write it like "
                '"{account}" or "CRM: {account}", or "" to write no category'
            ) from None
        if names - {None} != {"account"}:
            raise ValueError(
                f"{value!r} must name the account as {{account}} and nothing "
                'else, like "CRM: {account}"; or write "" to write no category'
            )
        return value

    @field_validator("opt_out")
    @classmethod
    def _opt_out(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "is empty; give the category that keeps an item out, such as "
                '"Don\'t track"'
            )
        return value.strip()

    def link_category(self, account: str) -> str:
        """The category for a linked account (call only when ``link`` is set)."""
        return self.link.format(account=account)


class MailboxBase(Strict):
    """What every mailbox has, whatever its kind."""

    address: str
    rep: str
    enabled: bool = True
    folders: list[str] | None = None
    exclude_folders: list[str] = DEFAULT_EXCLUDED_FOLDERS
    batch_size: int = Field(default=500, ge=1, le=10_000)
    # The rep's time zone for follow-ups (business days, due times); none:
    # followups.timezone.
    timezone: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"{value!r} is not an e-mail address")
        return value.strip().lower()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return _zone_name(value) if value is not None else None


class LocalMailbox(MailboxBase):
    """A mailbox read from files: a maildir, an mbox file or a tree of messages."""

    kind: Literal["local"]
    path: Annotated[Path, Lax]
    # Where follow-ups go: an .ics task and the letters (.docx); none: a
    # folder "outbox" beside path.
    outbox: Annotated[Path | None, Lax] = None
    # A message file (or mbox message) larger than this is not read but
    # rejected: parsing takes several times its size in memory.
    max_message_mb: float = 64

    @field_validator("max_message_mb")
    @classmethod
    def _max_message_mb(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(
                f"{value:g} is not more than 0; give the size in MB of the largest "
                "message to read, such as 64"
            )
        return value


class EwsMailbox(MailboxBase):
    """An Exchange Server mailbox read through EWS by one service account.

    The account signs in with ``basic`` or ``ntlm`` (a username and password),
    or ``oauth``: an app registration's client credentials, for which msal
    gets the tokens. No secret is ever in this file: ``password_env`` or
    ``client_secret_env`` names an environment variable, ``password_file`` or
    ``client_secret_file`` a file readable by the service user only.
    """

    kind: Literal["ews"]
    endpoint: str | None = None
    autodiscover: bool = False
    auth: Literal["basic", "ntlm", "oauth"] = "ntlm"
    username: str | None = None
    access: Literal["impersonation", "delegate"] = "impersonation"
    password_env: str | None = None
    password_file: Annotated[Path | None, Lax] = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    client_secret_file: Annotated[Path | None, Lax] = None
    authority: str = "https://login.microsoftonline.com"
    oauth_scope: str | None = None
    ca_bundle: Annotated[Path | None, Lax] = None
    backfill_days: int = Field(default=180, ge=1)
    page_size: int = Field(default=512, ge=1, le=512)
    max_retry_wait: float = Field(default=300.0, ge=0)
    retries: int = Field(default=5, ge=0)

    @field_validator("endpoint", "authority")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(
                f"{value!r} is not a URL; give a full URL, such as "
                "https://mail.contoso.com/EWS/Exchange.asmx"
            )
        if value is not None and value.startswith("http://"):
            host = urlsplit(value).hostname or ""
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise ValueError(
                    f"{value!r} is plain http: the password and the mail would "
                    "cross the network in clear; use https:// (and ca_bundle "
                    "for a private CA)"
                )
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(
                f"{value} is not a file; give the PEM file of the CA that signed "
                "the server's certificate"
            )
        return value

    @model_validator(mode="after")
    def _sign_in(self) -> EwsMailbox:
        where = f"mailbox {self.address}"
        if (self.endpoint is None) == (not self.autodiscover):
            raise ValueError(
                f"{where}: give either endpoint = the EWS URL or autodiscover = true"
            )
        for pair in (
            ("password_env", "password_file"),
            ("client_secret_env", "client_secret_file"),
        ):
            if all(getattr(self, k) for k in pair):
                raise ValueError(
                    f"{where}: {pair[0]} and {pair[1]} are both set; keep one"
                )
        if self.auth == "oauth":
            missing = [k for k in ("tenant_id", "client_id") if not getattr(self, k)]
            if missing:
                raise ValueError(
                    f'{where}: auth = "oauth" needs {" and ".join(missing)} '
                    "(from the app registration)"
                )
            if not (self.client_secret_env or self.client_secret_file):
                raise ValueError(
                    f'{where}: auth = "oauth" needs client_secret_env or '
                    "client_secret_file"
                )
            if self.access != "impersonation":
                raise ValueError(
                    f"{where}: an app signed in with oauth reaches mailboxes by "
                    'impersonation only; set access = "impersonation"'
                )
            if self.password_env or self.password_file:
                raise ValueError(
                    f'{where}: auth = "oauth" uses client_secret_env or '
                    "client_secret_file, not a password"
                )
        else:
            if not self.username:
                raise ValueError(
                    f"{where}: auth = {self.auth!r} needs username = the service "
                    "account"
                )
            if not (self.password_env or self.password_file):
                raise ValueError(
                    f"{where}: name the service account's password with "
                    "password_env or password_file"
                )
        return self

    @property
    def service_account(self) -> str:
        """Who signs in, for messages: the username, or the app's client id."""
        return self.username or f"app {self.client_id}"

    @property
    def scope(self) -> str:
        """The OAuth scope: the configured one, or the EWS server's ``/.default``."""
        if self.oauth_scope:
            return self.oauth_scope
        origin = urlsplit(self.endpoint or "https://outlook.office365.com")
        return f"{origin.scheme}://{origin.netloc}/.default"


class GraphMailbox(MailboxBase):
    """A Microsoft 365 mailbox read through Microsoft Graph by an app registration.

    The app signs in with its client credentials (app-only): ``tenant_id``,
    ``client_id`` and either a client secret (``client_secret_env`` names an
    environment variable, ``client_secret_file`` a file readable by the service
    user only) or a certificate: ``certificate_file`` is a PEM file (mode 600)
    with the unencrypted private key and the certificate uploaded to the app
    registration; ``certificate_thumbprint`` is its SHA-1 thumbprint, as the
    Entra admin center shows it (without it, the SHA-256 thumbprint is
    computed from the certificate).
    """

    kind: Literal["graph"]
    tenant_id: str
    client_id: str
    client_secret_env: str | None = None
    client_secret_file: Annotated[Path | None, Lax] = None
    certificate_file: Annotated[Path | None, Lax] = None
    certificate_thumbprint: str | None = None
    authority: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    ca_bundle: Annotated[Path | None, Lax] = None
    backfill_days: int = Field(default=180, ge=1)
    page_size: int = Field(default=100, ge=1, le=1000)
    max_retry_wait: float = Field(default=300.0, ge=0)
    retries: int = Field(default=5, ge=0)

    @field_validator("authority", "graph_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError(
                f"{value!r} is not an https URL; give a full URL, such as "
                "https://graph.microsoft.com"
            )
        return value.rstrip("/")

    @field_validator("ca_bundle", "certificate_file")
    @classmethod
    def _file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file; give the path of a PEM file")
        return value

    @field_validator("certificate_thumbprint")
    @classmethod
    def _thumbprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.replace(":", "").replace(" ", "").upper()
        if not re.fullmatch(r"[0-9A-F]{40}", digits):
            raise ValueError(
                f"{value!r} is not a SHA-1 thumbprint; copy the 40 hex digits "
                "the app registration shows under Certificates & secrets"
            )
        return digits

    @model_validator(mode="after")
    def _sign_in(self) -> GraphMailbox:
        where = f"mailbox {self.address}"
        given = [
            k
            for k in ("client_secret_env", "client_secret_file", "certificate_file")
            if getattr(self, k)
        ]
        if len(given) != 1:
            raise ValueError(
                f'{where}: kind = "graph" signs in with exactly one of '
                "client_secret_env, client_secret_file or certificate_file"
                + (f" (given: {', '.join(given)})" if given else "")
            )
        if self.certificate_thumbprint and not self.certificate_file:
            raise ValueError(
                f"{where}: certificate_thumbprint goes with certificate_file; "
                "add certificate_file or remove the thumbprint"
            )
        return self

    @property
    def service_account(self) -> str:
        """Who signs in, for messages: the app's client id."""
        return f"app {self.client_id}"

    @property
    def scope(self) -> str:
        """The OAuth scope: the Graph endpoint's ``/.default``."""
        return f"{self.graph_url}/.default"


KINDS = 'kind = "local" or kind = "ews" or kind = "graph"'

MailboxConfig = Annotated[
    LocalMailbox | EwsMailbox | GraphMailbox, Field(discriminator="kind")
]


# --- follow-ups ------------------------------------------------------------

WEEKDAYS = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)


def _zone_name(value: str) -> str:
    name = value.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a time zone; give an IANA name such as "
            "Europe/Berlin or America/Chicago"
        ) from None
    return name


class NoReplyRule(Strict):
    """An outbound e-mail to a contact that nobody answered in N business days."""

    enabled: bool = True
    business_days: int = Field(default=3, ge=1, le=60)
    # Mail older than this is not looked at (a back-fill of old mail makes
    # no reminders).
    lookback_days: int = Field(default=14, ge=1, le=365)


class AfterMeetingRule(Strict):
    """N days after a meeting with a contact ends: a reminder and a letter."""

    enabled: bool = True
    days: int = Field(default=1, ge=0, le=60)
    business_days: bool = True
    # The letter template (a name in followups.templates, or ""), drafted
    # with the reminder.
    letter: str = "sales_call_follow_up"
    # Occurrences of a recurring series (a weekly status call) too.
    recurring: bool = False
    lookback_days: int = Field(default=14, ge=1, le=365)


class CheckInRule(Strict):
    """Recurring reminders set by ``mailsync reminders add``."""

    enabled: bool = True


class DormantAccountRule(Strict):
    """An account with no e-mail or meeting for N days: a retention reminder."""

    enabled: bool = True
    days: int = Field(default=90, ge=7, le=3650)


class FollowupsConfig(Strict):
    """Follow-up reminders and letters (``[followups]`` and one table a rule).

    ``timezone`` is the reps' zone unless a mailbox sets its own; business
    days are ``workdays`` less ``holidays`` (dates, like 2026-12-24).
    """

    enabled: bool = True
    timezone: str = "UTC"
    # The time of day of a reminder that has none of its own (a dormant
    # account, a check-in given by --every).
    remind_at: str = "09:00"
    workdays: list[str] = list(WEEKDAYS[:5])
    holidays: list[Annotated[date, Lax]] = []
    templates: Annotated[Path, Lax] = Path("config/templates")
    evaluate_every_minutes: int = Field(default=15, ge=1, le=1440)
    # A periodic job (a check-in) missed while the service was down runs
    # once if it is back within this time; later, it waits for its next turn.
    misfire_grace_minutes: int = Field(default=60, ge=1)
    delivery_attempts: int = Field(default=5, ge=1, le=100)
    no_reply: NoReplyRule = NoReplyRule()
    after_meeting: AfterMeetingRule = AfterMeetingRule()
    check_in: CheckInRule = CheckInRule()
    dormant_account: DormantAccountRule = DormantAccountRule()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return _zone_name(value)

    @field_validator("remind_at")
    @classmethod
    def _remind_at(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value.strip()):
            raise ValueError(f"{value!r} is not a time; write it as HH:MM, like 09:00")
        return value.strip()

    @field_validator("workdays")
    @classmethod
    def _workdays(cls, values: list[str]) -> list[str]:
        days = [v.strip().lower() for v in values]
        for day in days:
            if day not in WEEKDAYS:
                raise ValueError(
                    f"{day!r} is not a weekday; write names such as "
                    '["monday", "tuesday"]'
                )
        if not days:
            raise ValueError('is empty; give the working days, like ["monday"]')
        return days

    def zone_of(self, mailbox: MailboxBase) -> ZoneInfo:
        """The rep's time zone: the mailbox's own, else this one."""
        return ZoneInfo(mailbox.timezone or self.timezone)


class ServiceConfig(Strict):
    """The long-running service, ``mailsync run`` (``[service]``).

    Every ``check_interval`` seconds each mailbox is asked what changed;
    every ``sweep_interval`` seconds each mailbox syncs every folder
    whatever the check said. ``workers`` cycles run at the same time. A
    lease lives ``lease_ttl`` seconds (none: three check intervals).
    ``/metrics`` and ``/health`` are served on ``metrics_host:metrics_port``
    (0: not at all); another host than loopback only when written here.
    """

    check_interval: float = Field(default=60, gt=0, le=86_400)
    sweep_interval: float = Field(default=3600, gt=0, le=7 * 86_400)
    workers: int = Field(default=4, ge=1, le=64)
    lease_ttl: float | None = Field(default=None, gt=0)
    metrics_port: int = Field(default=9464, ge=0, le=65_535)
    metrics_host: str = "127.0.0.1"

    @field_validator("metrics_host")
    @classmethod
    def _metrics_host(cls, value: str) -> str:
        # The HTTP server listens on IPv4 only: a host name or an address.
        value = value.strip()
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", value):
            raise ValueError(
                f"{value!r} is not an IPv4 address or host name; write one such "
                'as "127.0.0.1" (this host only) or "0.0.0.0" (every interface)'
            )
        return value

    def ttl(self) -> float:
        return self.lease_ttl or 3 * self.check_interval


class Config(Strict):
    database: DatabaseConfig = DatabaseConfig()
    service: ServiceConfig = ServiceConfig()
    organisation: OrganisationConfig
    linking: LinkingConfig = LinkingConfig()
    categories: CategoriesConfig = CategoriesConfig()
    followups: FollowupsConfig = FollowupsConfig()
    mailboxes: list[MailboxConfig] = []

    @model_validator(mode="after")
    def _unique_mailboxes(self) -> Config:
        seen: set[str] = set()
        for mailbox in self.mailboxes:
            if mailbox.address in seen:
                raise ValueError(
                    f"mailbox {mailbox.address} is configured twice; keep one "
                    "[[mailboxes]] entry for it"
                )
            seen.add(mailbox.address)
        return self

    def mailbox(self, address: str) -> MailboxConfig:
        wanted = address.strip().lower()
        for mailbox in self.mailboxes:
            if mailbox.address == wanted:
                return mailbox
        known = ", ".join(m.address for m in self.mailboxes) or "none"
        raise ConfigError(
            f"no mailbox {address!r} in the configuration (configured: {known}); "
            "add a [[mailboxes]] entry for it"
        )


def find_config_path(explicit: str | Path | None = None) -> Path:
    """The configuration file to use: explicit, then $MAILSYNC_CONFIG, then default."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("MAILSYNC_CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_PATH


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate the configuration file."""
    config_path = find_config_path(path)
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {str(config_path)!r} not found; pass --config FILE "
            "or set MAILSYNC_CONFIG"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read configuration file {str(config_path)!r}: {exc}; pass "
            "--config FILE with a readable UTF-8 TOML file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    return parse_config(raw, source=str(config_path))


def parse_config(raw: dict[str, Any], source: str = "configuration") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from None


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} error(s)"]
    for error in exc.errors():
        lines.append(f"- {_message(error)}")
    return "\n".join(lines)


def _message(error: Any) -> str:
    """One validation error as the key it is about and what to do."""
    where = _location(error["loc"])
    kind, context = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        if key.lower() in CLEAR_SECRETS:
            # Never echo the value: it is the secret.
            return (
                f"{where}: a secret written in the configuration is refused; "
                f"remove it and name it with {CLEAR_SECRETS[key.lower()]}"
            )
        return f"{where}: unknown key; remove it or check its spelling"
    if kind == "missing":
        return f"{where}: required key is missing; add it"
    if kind == "union_tag_invalid":
        tag = context.get("tag")
        return f"{where}.kind: unknown mailbox kind {tag!r}; use {KINDS}"
    if kind == "union_tag_not_found":
        return f"{where}.kind: required key is missing; add {KINDS}"
    if kind in ("int_type", "bool_type", "float_type", "string_type", "list_type"):
        what = {
            "int_type": "a number",
            "bool_type": "true or false",
            "float_type": "a number",
            "string_type": "a quoted string",
            "list_type": 'a list such as ["a", "b"]',
        }[kind]
        return f"{where}: {error['input']!r} is not {what}; write it as {what}"
    if kind == "value_error":
        return f"{where}: {context.get('error', error['msg'])}"
    if kind == "too_short":
        return f"{where}: is empty; give at least one value"
    return f"{where}: {error['msg']}"


# Keys that would hold a secret in clear, and what to write instead.
CLEAR_SECRETS = {
    "password": "password_env or password_file (a file of mode 600)",
    "client_secret": "client_secret_env or client_secret_file (a file of mode 600)",
    "secret": "password_env / client_secret_env, or the matching *_file key",
    "token": "client_secret_env or client_secret_file; tokens are fetched, not kept",
    "access_token": "client_secret_env or client_secret_file; tokens are fetched",
}


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("local", "ews", "graph"):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"
