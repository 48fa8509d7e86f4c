"""Address normalisation, linking rule 1 (mailsync.linker.addresses).

Punycode forms were worked out by hand from RFC 3492 and checked once against
the ``idna`` package; they are written out here, not computed.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailsync.linker.addresses import (
    domain_candidates,
    is_within,
    normalise,
    normalise_domain,
    strip_tag,
)

# --- normalise -------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("Andy.Carothers@TailspinToys.com", "andy.carothers@tailspintoys.com"),
        ("ANDY@X.COM", "andy@x.com"),
        ("  andy@x.com  ", "andy@x.com"),
        ("<andy@x.com>", "andy@x.com"),
        ("mailto:andy@x.com", "andy@x.com"),
        ("MAILTO:Andy@X.com", "andy@x.com"),
        ("<mailto:andy@x.com>", "andy@x.com"),
        ("mailto:<andy@x.com>", "andy@x.com"),
        ("andy@x.com.", "andy@x.com"),
    ],
)
def test_normalise_ignores_case_brackets_and_mailto(written: str, expected: str):
    assert normalise(written) == expected


@pytest.mark.parametrize(
    ("unicode_form", "punycode_form"),
    [
        ("info@bücher.de", "info@xn--bcher-kva.de"),
        ("Info@Bücher.DE", "info@xn--bcher-kva.de"),
        ("rathaus@münchen.de", "rathaus@xn--mnchen-3ya.de"),
        ("kontakt@mail.bücher.de", "kontakt@mail.xn--bcher-kva.de"),
    ],
)
def test_idn_domain_and_its_punycode_are_the_same(
    unicode_form: str, punycode_form: str
):
    assert normalise(unicode_form) == punycode_form
    assert normalise(punycode_form) == punycode_form
    assert normalise(punycode_form.upper()) == punycode_form


def test_non_ascii_local_part_is_lower_cased_and_kept():
    # RFC 6532 allows UTF-8 in the local part; only the domain becomes ASCII.
    assert normalise("Jürgen@Bücher.de") == "jürgen@xn--bcher-kva.de"


@pytest.mark.parametrize(
    "written",
    [None, "", "   ", "<>", "mailto:", "andy", "andy@", "@x.com", "andy.x.com"],
)
def test_no_address_gives_none(written: str | None):
    assert normalise(written) is None


@pytest.mark.parametrize("written", ["andy@x com", "andy@x.com>extra", "a@x\t.com"])
def test_domain_that_cannot_be_a_domain_gives_none(written: str):
    assert normalise(written) is None


def test_normalise_domain():
    assert normalise_domain("Bücher.DE") == "xn--bcher-kva.de"
    assert normalise_domain(".Mail.UTexas.edu.") == "mail.utexas.edu"
    assert normalise_domain("") is None


# --- strip_tag -------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("a+b@x.com", "a@x.com"),
        ("lorraine.nay+contoso@tailspintoys.com", "lorraine.nay@tailspintoys.com"),
        ("a+b+c@x.com", "a@x.com"),
        ("a@x.com", None),
        ("+b@x.com", None),
        ("a@x+y.com", None),
    ],
)
def test_strip_tag_only_strips_a_plus_tag(address: str, expected: str | None):
    assert strip_tag(address) == expected


# --- domain_candidates and is_within ---------------------------------------


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("a.mail.utexas.edu", ("a.mail.utexas.edu", "mail.utexas.edu", "utexas.edu")),
        ("mail.utexas.edu", ("mail.utexas.edu", "utexas.edu")),
        ("utexas.edu", ("utexas.edu",)),
        ("usa.conoco.com", ("usa.conoco.com", "conoco.com")),
        ("foo.co.uk", ("foo.co.uk",)),
        ("mail.foo.co.uk", ("mail.foo.co.uk", "foo.co.uk")),
        ("mail.xn--bcher-kva.de", ("mail.xn--bcher-kva.de", "xn--bcher-kva.de")),
    ],
)
def test_domain_candidates_stop_at_the_registrable_domain(
    domain: str, expected: tuple[str, ...]
):
    assert domain_candidates(domain) == expected


@pytest.mark.parametrize("suffix", ["co.uk", "com", "edu", "de"])
def test_a_public_suffix_is_never_a_candidate(suffix: str):
    assert suffix not in domain_candidates(suffix)
    assert suffix not in domain_candidates(f"tailspintoys.{suffix}")


def test_is_within():
    parents = frozenset({"utexas.edu", "contoso.com"})
    assert is_within("utexas.edu", parents)
    assert is_within("a.mail.utexas.edu", parents)
    assert not is_within("notutexas.edu", parents)
    assert not is_within("edu", parents)
    assert not is_within("contoso.com.evil.example", parents)


# --- properties ------------------------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_LOCAL = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}", fullmatch=True)
# Suffixes with no public suffix below them in the ICANN part of the list, so
# that the registrable domain is known by construction: one label + suffix.
_SUFFIX = st.sampled_from(["com", "org", "edu", "de", "co.uk"])


@st.composite
def ascii_addresses(draw: st.DrawFn) -> str:
    labels = draw(st.lists(_LABEL, min_size=1, max_size=4))
    domain = ".".join([*labels, draw(_SUFFIX)])
    address = f"{draw(_LOCAL)}@{domain}"
    if draw(st.booleans()):
        address = f"mailto:{address}"
    if draw(st.booleans()):
        address = f"<{address}>"
    return draw(st.sampled_from(["", " "])) + address


# Short runs of the pieces that matter to normalise, to reach the odd orders of
# brackets, dots, spaces and "mailto:" that whole addresses rarely do.
_PIECES = ["a", "Z", "ü", "@", ".", "<", ">", " ", "\t", "+", "mailto:", "x.com"]
_ADDRESS_LIKE = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)


@given(st.one_of(ascii_addresses(), _ADDRESS_LIKE, st.text()))
@example("mailto:<andy@x.com>")
@example("<andy@x.com>.")
def test_normalise_is_idempotent(text: str):
    once = normalise(text)
    if once is not None:
        assert normalise(once) == once


@given(ascii_addresses())
def test_normalise_ignores_ascii_case(address: str):
    assert normalise(address.upper()) == normalise(address)
    assert normalise(address.lower()) == normalise(address)


@given(st.one_of(ascii_addresses(), _ADDRESS_LIKE, st.text()))
def test_normalised_address_has_no_ascii_upper_case(text: str):
    result = normalise(text)
    if result is not None:
        assert not any("A" <= char <= "Z" for char in result)


@given(st.lists(_LABEL, min_size=1, max_size=5), _SUFFIX)
def test_every_candidate_ends_with_the_registrable_domain(
    labels: list[str], suffix: str
):
    domain = ".".join([*labels, suffix])
    registrable = f"{labels[-1]}.{suffix}"

    candidates = domain_candidates(domain)

    assert candidates[0] == domain
    assert candidates[-1] == registrable
    assert len(candidates) == len(labels)
    for candidate in candidates:
        assert candidate == registrable or candidate.endswith(f".{registrable}")
