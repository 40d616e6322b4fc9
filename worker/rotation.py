"""Key rotation: switching the active key, re-encrypting records, and where each record stands.

The *authority* on which key is active is outside the table, where a table writer can't reach:
the KMS alias (`kms` mode) or the newest material version in the meta store (`cached` mode).
The active-key control record announces a change to every replica (they poll it, and the
stream brings it at once); a replica switches only after checking it against the authority.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from . import profile
from .app import Components, load_index, new_index_key
from .aws import call
from .blind_index import IndexKeys
from .control import ACTIVE_KEY, INDEX_KEYS, is_control, read_control, write_control
from .crypto import KMS_REF_PREFIX, MATERIALS_REF_PREFIX, CachedKeys, ItemCipher
from .errors import UserstoreError, WriteConflict
from .logs import get_logger
from .record import RecordHead, from_item, to_item
from .settings import KeyMode
from .store import RecordStore, StoredRecord
from .streams import ShardProgress, read_progress

log = get_logger("userstore.rotation")

_CONTROL_RETRIES = 5


@dataclass(frozen=True)
class Target:
    """What a current record looks like: sealed under this key, email indexed with this version."""

    key_ref: str
    index_version: int

    def is_stale(self, head: RecordHead) -> bool:
        if head.key_ref != self.key_ref:
            return True
        return head.index_version is not None and head.index_version != self.index_version


class Resealed(StrEnum):
    RESEALED = "re-encrypted"
    CURRENT = "current"  # already under the target
    SKIPPED = "skipped"  # changed meanwhile, and the change brought it up to date
    MISSING = "missing"  # deleted meanwhile (tombstone expired)


class Resealer:
    """Re-encrypts one record without changing its content or losing a concurrent update."""

    def __init__(
        self, store: RecordStore, cipher: ItemCipher, index: IndexKeys, *, max_conflicts: int
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._index = index
        self._max_conflicts = max_conflicts

    async def reseal(
        self, user_id: str, target: Target, record: StoredRecord | None = None
    ) -> Resealed:
        """Raises RecordTampered for a record that fails verification: it is never rewritten."""
        current = record if record is not None else await self._store.get(user_id)
        for attempt in range(self._max_conflicts):
            if current is None:
                return Resealed.MISSING
            head = current.head
            if not target.is_stale(head):
                return Resealed.CURRENT if attempt == 0 else Resealed.SKIPPED
            state = from_item(await self._cipher.open(current.item))
            item = to_item(
                user_id,
                state,
                rev=head.rev + 1,
                recent_events=head.recent_events,
                expires_at=head.expires_at,
                email_index=self._index.token_for(profile.view(state)),
            )
            sealed = await self._cipher.seal(item)
            result = await self._store.put(sealed, expected_rev=head.rev)
            if result.written or (result.current is not None and result.current.item == sealed):
                return Resealed.RESEALED
            current = result.current  # a concurrent update won: re-decide on its record
        raise WriteConflict(f"re-encryption lost {self._max_conflicts} conditional writes in a row")


async def authority_ref(parts: Components) -> str:
    """The key_ref new records must carry, asked of the authority itself."""
    settings = parts.settings
    if settings.key_mode is KeyMode.KMS:
        described = await call(
            "DescribeKey",
            parts.clients.kms.describe_key,
            max_attempts=settings.aws_max_attempts,
            KeyId=settings.kms_key,
        )
        return KMS_REF_PREFIX + str(described["KeyMetadata"]["Arn"])
    return await parts.cipher.active_ref()


async def current_target(parts: Components) -> Target:
    return Target(await authority_ref(parts), parts.index.current.active_version)


async def rotate_key(parts: Components, to: str) -> str:
    """Make `to` the active key (kms: key id, ARN or alias; cached: `new` or a version number)."""
    settings = parts.settings
    if settings.key_mode is KeyMode.KMS:
        new_ref = await _point_alias(parts, to)
    else:
        new_ref = await _new_material_version(parts, to)
    await parts.cipher.activate(new_ref)
    await _update_control(parts, ACTIVE_KEY, lambda body: _with_active(body, new_ref))
    log.info("rotation.key_activated", key_ref=new_ref)
    return new_ref


async def rotate_index_key(parts: Components) -> int:
    """A new blind-index key version becomes active; the sweep re-indexes every email."""
    settings, kms = parts.settings, parts.clients.kms
    new_version = 0

    async def change(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal new_version
        new_version = max(int(v) for v in body["versions"]) + 1
        wrapped = await new_index_key(settings, kms, new_version)
        return {"active": new_version, "versions": {**body["versions"], str(new_version): wrapped}}

    body = await _update_control_async(parts, INDEX_KEYS, change)
    parts.index.current = await load_index(settings, kms, body)
    # Every stored email token must be recomputed: that is the re-encryption job's work too.
    await _update_control(parts, ACTIVE_KEY, lambda b: {**b, "reencrypt_pending": True})
    log.info("rotation.index_key_activated", version=new_version)
    return new_version


async def follow_control(parts: Components) -> bool:
    """Adopt the active key and index keys the control records announce, if the authority agrees.

    Returns True when something changed. A control record naming a key the authority does not
    confirm is refused and logged as a security event: only a forger or a half-done rotation
    writes one.
    """
    changed = False
    active = await read_control(parts.store, parts.cipher, ACTIVE_KEY)
    if active is not None:
        announced = str(active.body["active_key_ref"])
        if announced != parts.cipher.sealing_ref:
            if announced != await authority_ref(parts):
                log.error("security.control_record_not_confirmed", announced=announced)
            else:
                await parts.cipher.activate(announced)
                log.info("rotation.key_followed", key_ref=announced)
                changed = True
    index = await read_control(parts.store, parts.cipher, INDEX_KEYS)
    if index is not None and int(index.body["active"]) != parts.index.current.active_version:
        parts.index.current = await load_index(parts.settings, parts.clients.kms, index.body)
        log.info("rotation.index_key_followed", version=parts.index.current.active_version)
        changed = True
    return changed


async def follow_authority(parts: Components) -> Target:
    """Follow the control records, seal under the authority's key, and return the target.

    The stream handler's idea of "stale" must match what this replica seals under, or it would
    re-encrypt records into the key they are already under. Both come from the authority.
    """
    await follow_control(parts)
    target = await current_target(parts)
    if parts.cipher.sealing_ref != target.key_ref:
        await parts.cipher.activate(target.key_ref)
    return target


@dataclass(frozen=True)
class KeyUsage:
    active_key_ref: str
    active_index_version: int
    records_by_key: dict[str, int]
    emails_by_index_version: dict[int, int]
    tombstones: int

    @property
    def stale(self) -> int:
        return sum(n for ref, n in self.records_by_key.items() if ref != self.active_key_ref)


async def key_usage(parts: Components, segments: int = 4) -> KeyUsage:
    """How many records are sealed under each key, counted from signed-only bookkeeping."""
    target = await current_target(parts)
    by_key: Counter[str] = Counter()
    by_index: Counter[int] = Counter()
    tombstones = 0

    async def scan(segment: int) -> None:
        nonlocal tombstones
        paginator = parts.clients.dynamodb.get_paginator("scan")
        async for page in paginator.paginate(
            TableName=parts.settings.table,
            Segment=segment,
            TotalSegments=segments,
            ProjectionExpression="user_id, key_ref, email_idx, presence",
        ):
            for item in page.get("Items", []):
                if is_control(item["user_id"]["S"]):
                    continue
                by_key[item.get("key_ref", {}).get("S", "")] += 1
                if "email_idx" in item:
                    by_index[int(item["email_idx"]["S"].partition(":")[0])] += 1
                if item.get("presence", {}).get("S") == "deleted":
                    tombstones += 1

    await asyncio.gather(*(scan(s) for s in range(segments)))
    return KeyUsage(target.key_ref, target.index_version, dict(by_key), dict(by_index), tombstones)


async def _point_alias(parts: Components, to: str) -> str:
    settings, kms = parts.settings, parts.clients.kms
    if not settings.kms_key.startswith("alias/"):
        raise UserstoreError("rotation in kms mode needs USERSTORE_KMS_KEY to be an alias")
    described = await call(
        "DescribeKey", kms.describe_key, max_attempts=settings.aws_max_attempts, KeyId=to
    )
    metadata = described["KeyMetadata"]
    if metadata.get("KeyState", "Enabled") != "Enabled":
        raise UserstoreError(f"key {metadata['Arn']} is not enabled")
    await call(
        "UpdateAlias",
        kms.update_alias,
        max_attempts=settings.aws_max_attempts,
        AliasName=settings.kms_key,
        TargetKeyId=metadata["KeyId"],
    )
    return KMS_REF_PREFIX + str(metadata["Arn"])


async def _new_material_version(parts: Components, to: str) -> str:
    keys = parts.cipher.keys
    assert isinstance(keys, CachedKeys)
    loop = asyncio.get_running_loop()
    newest = await loop.run_in_executor(None, keys.meta_store.max_version, keys.material_name)
    version = newest + 1 if to == "new" else int(to)
    if version <= newest:
        raise UserstoreError(f"material version {version} is not newer than {newest}")
    await loop.run_in_executor(
        None, keys.meta_store.get_or_create_provider, keys.material_name, version
    )
    return f"{MATERIALS_REF_PREFIX}{keys.material_name}#{version}"


def _with_active(body: dict[str, Any], new_ref: str) -> dict[str, Any]:
    history = [r for r in body.get("history", []) if r != new_ref] + [new_ref]
    return {
        "active_key_ref": new_ref,
        "history": history,
        "changed_at": datetime.now(UTC).isoformat(),
        "reencrypt_pending": True,
    }


async def job_done(parts: Components, key_ref: str) -> None:
    """Clear the pending re-encryption job, unless another rotation happened meanwhile."""

    def clear(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("active_key_ref") != key_ref:
            return body
        return {**body, "reencrypt_pending": False}

    await _update_control(parts, ACTIVE_KEY, clear)


async def _update_control(parts: Components, control_id: str, change: Any) -> dict[str, Any]:
    async def async_change(body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = change(body)
        return result

    return await _update_control_async(parts, control_id, async_change)


async def _update_control_async(parts: Components, control_id: str, change: Any) -> dict[str, Any]:
    for _ in range(_CONTROL_RETRIES):
        control = await read_control(parts.store, parts.cipher, control_id)
        if control is None:
            raise UserstoreError("the table has no control records: run `userstore provision`")
        body: dict[str, Any] = await change(control.body)
        if await write_control(
            parts.store, parts.cipher, control_id, body, expected_rev=control.rev
        ):
            return body
    raise WriteConflict("the control record kept changing under us")


async def stream_progress(parts: Components) -> list[ShardProgress]:
    """Per shard of the table's stream: who reads it and how far behind it is."""
    described = await call(
        "DescribeTable",
        parts.clients.dynamodb.describe_table,
        max_attempts=parts.settings.aws_max_attempts,
        TableName=parts.settings.table,
    )
    arn = described["Table"].get("LatestStreamArn")
    if not arn:
        return []
    return await read_progress(
        parts.clients.dynamodb,
        parts.settings.state_table,
        str(arn),
        max_attempts=parts.settings.aws_max_attempts,
    )
