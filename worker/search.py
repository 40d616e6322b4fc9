"""Looking users up: one by id (verified, decrypted), or by email through the blind index
(each candidate confirmed by decrypting it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .blind_index import IndexKeys, normalize_email
from .crypto import ItemCipher
from .errors import RecordTampered, UserNotFound
from .logs import get_logger
from .ports import UsersTable
from .profile import view
from .record import from_item

log = get_logger("userstore.search")


class SearchContext(Protocol):
    """A lookup reads the index keys, the users table, and opens candidates."""

    @property
    def store(self) -> UsersTable: ...

    @property
    def cipher(self) -> ItemCipher: ...

    @property
    def index(self) -> IndexKeys: ...


async def verified_profile(ctx: SearchContext, user_id: str) -> dict[str, Any]:
    """The decrypted, verified profile; UserNotFound or RecordTampered otherwise."""
    record = await ctx.store.get(user_id)
    if record is None:
        raise UserNotFound("no such user")
    current = view(from_item(await ctx.cipher.open(record.item)))
    if current is None:
        raise UserNotFound("no such user (deleted)")
    return current


@dataclass(frozen=True)
class EmailMatches:
    """What a lookup found: verified matches, and candidates that failed verification."""

    user_ids: list[str]
    # Not in user_ids: their plaintext can't be trusted, so whether they match is unknown.
    failed_verification: list[str]


async def find_by_email(ctx: SearchContext, email: str) -> list[str]:
    """User ids whose current email is `email` (normalized), sorted; see `match_email`."""
    return (await match_email(ctx, email)).user_ids


async def match_email(ctx: SearchContext, email: str) -> EmailMatches:
    """Candidates from the blind index, each confirmed by decrypting it; both lists sorted.

    The index is eventually consistent and tokens are only as good as the key version they were
    made with, so every candidate is read consistently, verified and compared in plaintext. A
    candidate that fails verification is skipped (one forged record must not hide the genuine
    ones) and logged as a security event, with no email and no user id (the caller gets those).
    """
    tokens = ctx.index.current.tokens(email)
    candidates: set[str] = set()
    for token in tokens:
        candidates |= await ctx.store.users_with_email_token(token)
    wanted = normalize_email(email)
    found: list[str] = []
    failed: list[str] = []
    for user_id in sorted(candidates):
        try:
            record = await ctx.store.get(user_id)
            if record is None or record.head.email_index not in tokens:
                continue  # changed since the index was read
            current = view(from_item(await ctx.cipher.open(record.item))) or {}
        except RecordTampered:
            log.error("security.record_verification_failed", source="find")
            failed.append(user_id)
            continue
        if normalize_email(str(current.get("email", ""))) == wanted:
            found.append(user_id)
    return EmailMatches(found, failed)
