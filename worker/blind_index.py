"""Search on encrypted email: a blind index.

The table never holds an email in plaintext. Each record that has one also carries a signed-only
token, `<version>:<HMAC-SHA256(index key, normalized email)>`, with a global secondary index on
it. Finding a user by email is a query for the token; only someone holding the index key can
compute it. The index keys are 256-bit KMS data keys: stored only wrapped by KMS (in a control
record), unwrapped into memory at start-up.

What it leaks (see docs/keys.md): which records share an email, and how many records have one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

import idna

INDEX_PURPOSE = "userstore-email-index"
INDEX_NAME = "email-index"


def normalize_email(email: str) -> str:
    """One spelling per address, the text its token is computed from.

    The whole address gets Unicode NFKC and loses surrounding whitespace; then it is split at
    its last ``@``. The local part is case-folded: RFC 5321 lets it be case-sensitive, but no
    mainstream provider treats it so, and users type it either way. The domain:

    - all ASCII (``xn--`` spellings included): lower-cased, exactly as before 0.5, so no ASCII
      address's token changed;
    - otherwise: its IDNA A-label (UTS 46 mapping, IDNA 2008, the ``idna`` package that
      email-validator checks addresses with), so ``Bücher.example`` and
      ``xn--bcher-kva.example`` give one token. ``ß`` and ``ς`` are kept distinct (they are
      distinct domains under IDNA 2008);
    - not valid IDNA (or no ``@``): case-folded, the rule before 0.5.
    """
    text = unicodedata.normalize("NFKC", email).strip()
    local, at, domain = text.rpartition("@")
    if not at or domain.isascii():
        return text.casefold()
    try:
        domain = idna.encode(domain, uts46=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError and its subclasses: not a valid domain name
        domain = domain.casefold()
    return f"{local.casefold()}@{domain}"


def kms_context(table: str, version: int) -> dict[str, str]:
    """KMS encryption context binding a wrapped index key to its purpose, table and version."""
    return {"purpose": INDEX_PURPOSE, "table": table, "version": str(version)}


@dataclass(frozen=True)
class EmailIndex:
    """Index keys by version, and which one new tokens use. Pure CPU: safe on the event loop."""

    keys: Mapping[int, bytes]
    active_version: int

    def __post_init__(self) -> None:
        if self.active_version not in self.keys:
            raise ValueError("the active index key version has no key")

    def token(self, email: str, version: int | None = None) -> str:
        version = self.active_version if version is None else version
        digest = hmac.new(
            self.keys[version], normalize_email(email).encode("utf-8"), hashlib.sha256
        ).digest()
        return f"{version}:{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"

    def tokens(self, email: str) -> list[str]:
        """The email's token under every known version, active first (for lookups mid-rotation)."""
        versions = sorted(self.keys, key=lambda v: (v != self.active_version, -v))
        return [self.token(email, v) for v in versions]


class IndexKeys:
    """The EmailIndex in force; replaced as a whole when index keys rotate."""

    def __init__(self, current: EmailIndex, versions: Mapping[int, object] | None = None) -> None:
        self.current = current
        # Per version, how it is stored (worker.rotation.IndexVersion: which KMS key wraps it).
        self.versions: Mapping[int, object] = versions or {}

    def token_for(self, profile: Mapping[str, object] | None) -> str | None:
        email = (profile or {}).get("email")
        return self.current.token(email) if isinstance(email, str) else None
