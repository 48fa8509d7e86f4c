"""Address normalisation, the first linking rule.

- case is ignored, in the local part too (no mail system we serve is
  case-sensitive there);
- an IDN domain and its punycode form are the same: domains are kept in their
  ASCII (punycode) form;
- a ``+tag`` is stripped only when the exact address matches nothing;
- an empty or malformed address normalises to ``None`` and is skipped.
"""

from __future__ import annotations

from functools import lru_cache

import idna
import tldextract

# The public suffix list that ships inside tldextract: no network at run time.
_SUFFIXES = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@lru_cache(maxsize=65536)
def normalise(address: str | None) -> str | None:
    """The canonical form of an address, or ``None`` if it is not one."""
    if not address:
        return None
    text = address.strip().strip("<>").strip().rstrip(".")
    if text.lower().startswith("mailto:"):
        text = text[7:]
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return None
    ascii_domain = normalise_domain(domain)
    if ascii_domain is None:
        return None
    return f"{local.lower()}@{ascii_domain}"


@lru_cache(maxsize=16384)
def normalise_domain(domain: str) -> str | None:
    """A domain in lower-case ASCII form; IDN labels become punycode."""
    text = domain.strip().strip(".").lower()
    if not text or " " in text:
        return None
    if text.isascii():
        return text
    try:
        return idna.encode(text, uts46=True).decode("ascii")
    except idna.IDNAError:
        try:
            return text.encode("idna").decode("ascii")
        except UnicodeError:
            return None


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
    registrable = _SUFFIXES(domain).top_domain_under_public_suffix
    if not registrable:
        return (domain,)
    stop = len(registrable.split("."))
    return tuple(".".join(labels[i:]) for i in range(0, len(labels) - stop + 1))


def is_within(domain: str, parents: frozenset[str]) -> bool:
    """True when ``domain`` is one of ``parents`` or a subdomain of one."""
    labels = domain.split(".")
    return any(".".join(labels[i:]) in parents for i in range(len(labels)))
