"""Find users by email through the blind index, then confirm each candidate by decrypting it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .app import Components
from .aws import call
from .blind_index import INDEX_NAME, normalize_email
from .errors import RecordTampered
from .logs import get_logger
from .profile import view
from .record import EMAIL_INDEX, from_item

log = get_logger("userstore.search")


@dataclass(frozen=True)
class EmailMatches:
    """What a lookup found: verified matches, and candidates that failed verification."""

    user_ids: list[str]
    # Not in user_ids: their plaintext can't be trusted, so whether they match is unknown.
    failed_verification: list[str]


async def find_by_email(parts: Components, email: str) -> list[str]:
    """User ids whose current email is `email` (normalized), sorted; see `match_email`."""
    return (await match_email(parts, email)).user_ids


async def match_email(parts: Components, email: str) -> EmailMatches:
    """Candidates from the blind index, each confirmed by decrypting it; both lists sorted.

    The index is eventually consistent and tokens are only as good as the key version they were
    made with, so every candidate is read consistently, verified and compared in plaintext. A
    candidate that fails verification is skipped (one forged record must not hide the genuine
    ones) and logged as a security event, with no email and no user id (the caller gets those).
    """
    tokens = parts.index.current.tokens(email)
    candidates: set[str] = set()
    for token in tokens:
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": parts.settings.table,
                "IndexName": INDEX_NAME,
                "KeyConditionExpression": "#idx = :token",
                "ExpressionAttributeNames": {"#idx": EMAIL_INDEX},
                "ExpressionAttributeValues": {":token": {"S": token}},
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            page = await call(
                "Query",
                parts.clients.dynamodb.query,
                max_attempts=parts.settings.aws_max_attempts,
                **kwargs,
            )
            candidates.update(item["user_id"]["S"] for item in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                break
    wanted = normalize_email(email)
    found: list[str] = []
    failed: list[str] = []
    for user_id in sorted(candidates):
        try:
            record = await parts.store.get(user_id)
            if record is None or record.head.email_index not in tokens:
                continue  # changed since the index was read
            current = view(from_item(await parts.cipher.open(record.item))) or {}
        except RecordTampered:
            log.error("security.record_verification_failed", source="find")
            failed.append(user_id)
            continue
        if normalize_email(str(current.get("email", ""))) == wanted:
            found.append(user_id)
    return EmailMatches(found, failed)
