"""The blind index gives one token per address however it is typed (pure, no AWS).

Holds worker/blind_index.py's "One spelling per address, the text its token is computed from"
at the token, the value `find` queries for: if two spellings of one address gave two tokens,
`userstore find --email` would miss the user (tests/integration/test_doc_claims.py shows that
through the real search).
"""

from __future__ import annotations

import pytest

from userstore.worker.blind_index import EmailIndex

INDEX = EmailIndex({1: b"k" * 32, 2: b"l" * 32}, active_version=2)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("ada.lovelace@example.org", "Ada.Lovelace@Example.ORG"),  # case
        ("ada.lovelace@example.org", "ADA.LOVELACE@EXAMPLE.ORG"),
        ("ada@example.org", "\uff41\uff44\uff41@example.org"),  # fullwidth local part (NFKC)
        ("ada@example.org", "ada@\uff45xample.org"),  # fullwidth in the domain (NFKC)
        ("ren\u00e9@example.org", "rene\u0301@example.org"),  # composed / decomposed
        ("ren\u00e9@example.org", "RENE\u0301@Example.org"),
        ("\ufb01le@example.org", "file@example.org"),  # the "fi" ligature (NFKC only)
        ("ada@example.org", " ada@example.org\t"),  # surrounding whitespace
    ],
)
def test_equivalent_spellings_give_one_token(typed: str, stored: str) -> None:
    assert INDEX.token(typed) == INDEX.token(stored)
    assert INDEX.tokens(typed) == INDEX.tokens(stored)  # every version, as `find` queries


def test_different_addresses_give_different_tokens() -> None:
    assert INDEX.token("ada@example.org") != INDEX.token("ada@example.com")
    assert INDEX.token("rene@example.org") != INDEX.token("ren\u00e9@example.org")
