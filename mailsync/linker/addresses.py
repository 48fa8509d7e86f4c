"""Address normalisation, the first linking rule.

- case is ignored, in the local part too (no mail system we serve is
  case-sensitive there);
- an IDN domain and its punycode form are the same: domains are kept in their
  ASCII (punycode) form;
- a ``+tag`` is stripped only when the exact address matches nothing;
- an empty or malformed address normalises to ``None`` and is skipped.
"""

from __future__ import annotations

import re
from functools import lru_cache

import idna
import tldextract

# The public suffix list that ships inside tldextract: no network at run time.
_SUFFIXES = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
# Letters, digits, hyphens and underscores in dot-separated labels, or an
# address literal such as [192.0.2.1]. Anything else is not a mail domain.
_DOMAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[^\[\]\\\s]+\]")


@lru_cache(maxsize=65536)
def normalise(address: str | None) -> str | None:
    """The canonical form of an address, or ``None`` if it is not one."""
    if not address:
        return None
    text = _unwrap(address)
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return None
    ascii_domain = normalise_domain(domain)
    if ascii_domain is None:
        return None
    return f"{local.lower()}@{ascii_domain}"


def _unwrap(text: str) -> str:
    """The address without the spaces, ``<>``, ``mailto:`` and final dots around it.

    These come in any order (``mailto:<a@x.com>``, ``<a@x.com>.``), so they are
    peeled off until none is left; one pass leaves some behind.
    """
    previous = None
    while text != previous:
        previous = text
        text = text.strip().strip("<>").rstrip(".")
        if text[:7].lower() == "mailto:":
            text = text[7:]
    return text


@lru_cache(maxsize=16384)
def normalise_domain(domain: str) -> str | None:
    """A domain in lower-case ASCII form; IDN labels become punycode."""
    text = domain.strip().strip(".").lower()
    if not text or " " in text:
        return None
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError:
            try:
                text = text.encode("idna").decode("ascii")
            except UnicodeError:
                return None
    return text if _DOMAIN.fullmatch(text) else None


def strip_tag(address: str) -> str | None:
    """``name+tag@domain`` without its tag, or ``None`` if it has none."""
    local, _, domain = address.partition("@")
    base, plus, _tag = local.partition("+")
    if not plus or not base:
        return None
    return f"{base}@{domain}"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


@lru_cache(maxsize=16384)
def domain_candidates(domain: str) -> tuple[str, ...]:
    """The domain and its parents, down to the registrable domain.

    ``mail.utexas.edu`` gives ``("mail.utexas.edu", "utexas.edu")``; a public
    suffix itself (``co.uk``) is never a candidate.
    """
    labels = domain.split(".")
    parts = _SUFFIXES(domain)
    registrable = parts.top_domain_under_public_suffix
    if not registrable:
        # A public suffix has no candidates; a name outside the list (an
        # intranet "ect", "localhost") stands for itself.
        return () if parts.suffix else (domain,)
    stop = len(registrable.split("."))
    return tuple(".".join(labels[i:]) for i in range(0, len(labels) - stop + 1))


def is_within(domain: str, parents: frozenset[str]) -> bool:
    """True when ``domain`` is one of ``parents`` or a subdomain of one."""
    labels = domain.split(".")
    return any(".".join(labels[i:]) in parents for i in range(len(labels)))
