"""How an email is normalized before its blind-index token is computed (pure, no AWS)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from userstore.worker.blind_index import EmailIndex, normalize_email


def fullwidth(text: str) -> str:
    """The same ASCII letters in their fullwidth forms (NFKC maps them back)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in text)


def rule_before_0_5(email: str) -> str:
    return unicodedata.normalize("NFKC", email).strip().casefold()


@pytest.mark.parametrize(
    ("spellings", "normalized"),
    [
        # The U-label and its A-label (any case) give one form: the A-label.
        (
            [
                "ada@bücher.example",
                "ada@BÜCHER.example",
                "ada@xn--bcher-kva.example",
                "Ada@XN--BCHER-KVA.EXAMPLE",
                " \tada@Bücher.example\n",
                "ada@bu\u0308cher.example",  # decomposed ü
                fullwidth("ada@b") + "ü" + fullwidth("cher.example"),
            ],
            "ada@xn--bcher-kva.example",
        ),
        (
            ["Ada@Example.ORG", " ADA@example.org ", fullwidth("ada@example.org")],
            "ada@example.org",
        ),
        # The local part keeps its own rule (NFKC, case-folded), whatever the domain.
        (["Zoë@bücher.example", "ZOË@Xn--Bcher-Kva.Example"], "zoë@xn--bcher-kva.example"),
        (["STRASSE@例え.テスト"], "strasse@xn--r8jz45g.xn--zckzah"),
        # Split at the last @ (a quoted local part may hold one).
        (['"a@b"@Bücher.example'], '"a@b"@xn--bcher-kva.example'),
    ],
)
def test_one_form_per_address(spellings: list[str], normalized: str) -> None:
    assert {normalize_email(s) for s in spellings} == {normalized}


def test_sharp_s_and_final_sigma_domains_stay_distinct_domains() -> None:
    """IDNA 2008 keeps ß and ς: straße.de and strasse.de are two domains (casefold merged them)."""
    assert normalize_email("a@Straße.de") == "a@xn--strae-oqa.de"
    assert normalize_email("a@strasse.de") == "a@strasse.de"
    final_sigma, sigma = "\u03c2", "\u03c3"
    assert normalize_email(f"a@{final_sigma}.gr") != normalize_email(f"a@{sigma}.gr")


@pytest.mark.parametrize(
    "email",
    [
        "a@-ü.example",  # hyphen at a label's start
        "a@ü..example",  # empty label
        "a@" + "ü" * 64 + ".example",  # label too long
        "a@ü\u200d.example",  # joiner out of context
        "a@[ü]",
        "a@xn--zz.example",  # ASCII, not a valid A-label: left as it is
        "no-at-sign-Ü",
        "",
    ],
)
def test_not_valid_idna_falls_back_to_the_plain_rule(email: str) -> None:
    assert normalize_email(email) == rule_before_0_5(email)


@given(
    local=st.text(min_size=1, max_size=20),
    domain=st.text(
        alphabet=st.characters(codec="ascii", exclude_characters="@"), min_size=1, max_size=30
    ),
)
def test_every_ascii_domain_keeps_its_token_from_before_0_5(local: str, domain: str) -> None:
    email = f"{local}@{domain}"
    assert normalize_email(email) == rule_before_0_5(email)


def test_tokens_of_both_spellings_are_equal() -> None:
    index = EmailIndex({1: b"k" * 32, 2: b"l" * 32}, active_version=2)
    assert index.tokens("ada@bücher.example") == index.tokens("ADA@xn--bcher-kva.example")
    assert index.token("ada@bücher.example") != index.token("ada@bucher.example")
