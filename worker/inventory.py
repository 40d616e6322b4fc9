"""The key inventory: every ciphertext userstore holds, per key, and whether an old key can go.

`userstore rotation status` prints it. A key can be retired (disabled, then deleted) only when
nothing userstore holds needs it any more:
- user records sealed under it (`kms` mode), or under a material version it wraps (`cached`);
- control records sealed under it (or under such a version);
- blind-index key versions wrapped under it;
- material versions (`cached` mode) it wraps that any record or control record still uses;
- an earlier payload key: messages sealed under it may sit in the queue or the dead-letter
  queue, and publishers may seal under it for as long as their data-key cache lasts.
Everything is counted from signed-only bookkeeping and the control records: no decryption.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .authority import AuthorityContext, current_target
from .control import ACTIVE_KEY, ControlRecords, is_control
from .errors import KeyNotFound
from .follow import payload_history
from .index_keys import IndexVersion
from .keyref import KeyKind, KeyRef, parse_or_none
from .ports import ShardProgressReader, UsersTable
from .profile import Presence
from .record import RECORD_FORMAT, read_head
from .streams import ShardProgress


@dataclass(frozen=True)
class PayloadKeys:
    """The payload key, and earlier ones that sealed messages may still need."""

    active: KeyRef | None
    # per earlier key: when it stopped being active
    previous: tuple[tuple[KeyRef, datetime], ...]
    queued: int  # messages in the queue and the dead-letter queue (approximate)
    now: datetime
    publisher_cache_s: float

    def uses(self, key: KeyRef) -> list[str]:
        needs = []
        for earlier, rotated_at in self.previous:
            if earlier != key:
                continue
            until = rotated_at + timedelta(seconds=self.publisher_cache_s)
            if self.now < until:
                needs.append(
                    f"publishers may still seal under it until {until:%Y-%m-%d %H:%M:%S} UTC "
                    "(their data-key cache)"
                )
            if self.queued:
                needs.append(
                    f"{self.queued} messages in the queue and dead-letter queue may be sealed "
                    "under it (drain the queue, redrive or purge the dead letters)"
                )
        return needs


@dataclass(frozen=True)
class Inventory:
    active_key: KeyRef
    active_index_version: int
    records_by_key: dict[str, int]
    controls_by_key: dict[str, int]
    emails_by_index_version: dict[int, int]
    tombstones: int
    index_wrapped_under: dict[int, KeyRef]
    # user records per record format (the sweep upgrades older formats)
    records_by_format: dict[int, int] = field(default_factory=dict)
    # cached mode: which KMS key wraps each material version (None: made before 0.5, unknown)
    material_keys: dict[int, KeyRef | None] = field(default_factory=dict)
    active_kms_key: KeyRef | None = None
    history: tuple[KeyRef, ...] = ()
    payload: PayloadKeys | None = None
    storage_key: KeyRef | None = None

    @property
    def stale(self) -> int:
        """User records not sealed under the active key."""
        active = str(self.active_key)
        return sum(n for ref, n in self.records_by_key.items() if ref != active)

    @property
    def old_format(self) -> int:
        """User records in a layout older than the one every write stores."""
        return sum(n for layout, n in self.records_by_format.items() if layout != RECORD_FORMAT)

    def uses(self, key: KeyRef) -> list[str]:
        """What userstore holds that needs `key`, in words (empty: it can be retired)."""
        needs = []
        text = str(key)
        if self.payload is not None:
            needs.extend(self.payload.uses(key))
        if self.records_by_key.get(text):
            needs.append(f"{self.records_by_key[text]} user records sealed under it")
        if self.controls_by_key.get(text):
            needs.append(f"{self.controls_by_key[text]} control records sealed under it")
        if key.kind is KeyKind.KMS:
            for version, under in sorted(self.index_wrapped_under.items()):
                if under == key:
                    needs.append(f"blind-index key version {version} wrapped under it")
            for version, wrapping in sorted(self.material_keys.items()):
                if wrapping == key:
                    material = self._material(version)
                    if material is not None and self.uses(material):
                        needs.append(f"material version {version} wrapped under it, in use")
        return needs

    def _material(self, version: int) -> KeyRef | None:
        if self.active_key.kind is not KeyKind.MATERIALS:
            return None
        return KeyRef.materials(self.active_key.name, version)

    def old_keys(self) -> list[KeyRef]:
        """Every key userstore has used other than the ones in force now."""
        current = {self.active_key, self.active_kms_key}
        if self.payload is not None:
            current.add(self.payload.active)
        seen: dict[KeyRef, None] = {}
        candidates = [
            *self.history,
            *self.index_wrapped_under.values(),
            *(k for k in self.material_keys.values() if k is not None),
            *(r for r in map(parse_or_none, self.records_by_key) if r is not None),
            *(r for r in map(parse_or_none, self.controls_by_key) if r is not None),
            *(k for k, _ in (self.payload.previous if self.payload else ())),
        ]
        for key in candidates:
            if key not in current:
                seen[key] = None
        return sorted(seen)

    def retirable(self) -> bool:
        return self.stale == 0 and not any(self.uses(k) for k in self.old_keys())

    def unused_index_versions(self) -> list[int]:
        return [
            v
            for v in sorted(self.index_wrapped_under)
            if v != self.active_index_version and not self.emails_by_index_version.get(v)
        ]


class InventoryContext(AuthorityContext, Protocol):
    """What counting needs: the tables, the control records, the keys, the queues' depth."""

    @property
    def store(self) -> UsersTable: ...

    @property
    def state_table(self) -> ShardProgressReader: ...

    @property
    def controls(self) -> ControlRecords: ...

    async def queued_messages(self) -> int:
        """Messages in the queue and its dead-letter queue, approximately."""
        ...


async def inventory(ctx: InventoryContext, segments: int = 4) -> Inventory:
    """Count every record, control record and wrapped key per key (a scan of bookkeeping)."""
    target = await current_target(ctx)
    by_key: Counter[str] = Counter()
    controls: Counter[str] = Counter()
    by_index: Counter[int] = Counter()
    tombstones = 0
    by_format: Counter[int] = Counter()

    async def scan(segment: int) -> None:
        nonlocal tombstones
        async for page in ctx.store.scan_bookkeeping(segment, segments):
            for item in page:
                key_ref = item.get("key_ref", {}).get("S", "")
                if is_control(item["user_id"]["S"]):
                    controls[key_ref] += 1
                    continue
                by_key[key_ref] += 1
                if "email_idx" in item:
                    by_index[int(item["email_idx"]["S"].partition(":")[0])] += 1
                head = read_head(item)  # a malformed one is tampering: status says so
                by_format[head.format] += 1
                if head.presence is Presence.DELETED:
                    tombstones += 1

    await asyncio.gather(*(scan(s) for s in range(segments)))
    active_body = await ctx.controls.read(ACTIVE_KEY)
    body = active_body.body if active_body is not None else {}
    history = tuple(r for r in map(parse_or_none, body.get("history", [])) if r is not None)
    material_keys: dict[int, KeyRef | None] = {}
    if target.key_ref.kind is KeyKind.MATERIALS:
        recorded = body.get("material_keys", {})
        for version in range(target.key_ref.version + 1):
            material_keys[version] = parse_or_none(str(recorded.get(str(version), "")))
    payload = PayloadKeys(
        active=await _payload_key(ctx),
        previous=tuple(payload_history(body)),
        queued=await ctx.queued_messages(),  # any may be sealed
        now=datetime.now(UTC),
        publisher_cache_s=ctx.settings.payload_key_cache_s,
    )
    versions = ctx.index.versions
    wrapped_under = {
        v: info.under for v, info in versions.items() if isinstance(info, IndexVersion)
    }
    return Inventory(
        active_key=target.key_ref,
        active_index_version=target.index_version,
        records_by_key=dict(by_key),
        controls_by_key=dict(controls),
        emails_by_index_version=dict(by_index),
        tombstones=tombstones,
        index_wrapped_under=wrapped_under,
        records_by_format=dict(by_format),
        material_keys=material_keys,
        active_kms_key=await ctx.keys.active_kms_key(),
        history=history,
        payload=payload,
        storage_key=await _optional_key(ctx, ctx.settings.storage_kms_key),
    )


async def _payload_key(ctx: InventoryContext) -> KeyRef | None:
    return await _optional_key(ctx, ctx.settings.payload_kms_key)


async def _optional_key(ctx: InventoryContext, key_id: str) -> KeyRef | None:
    try:
        return await ctx.keys.resolve(key_id)
    except KeyNotFound:  # not provisioned (a deployment without sealed payloads, say)
        return None


async def stream_progress(ctx: InventoryContext) -> list[ShardProgress]:
    """Per shard of the table's stream: who reads it and how far behind it is."""
    arn = await ctx.store.stream_arn()
    if not arn:
        return []
    return await ctx.state_table.shard_progress(arn)


def describe(inv: Inventory) -> list[str]:
    """The inventory in words, for `userstore rotation status` (pure)."""
    active = str(inv.active_key)
    lines = [f"active key: {active}"]
    if inv.active_kms_key is not None and inv.active_kms_key != inv.active_key:
        lines.append(f"  material versions are wrapped under: {inv.active_kms_key}")
    lines.append("user records per key:")
    for ref, count in sorted(inv.records_by_key.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {count:8d}  {ref or '(none)'}  [{'active' if ref == active else 'stale'}]")
    lines.append("control records per key:")
    for ref, count in sorted(inv.controls_by_key.items()):
        lines.append(f"  {count:8d}  {ref or '(none)'}  [{'active' if ref == active else 'stale'}]")
    lines.append(f"blind-index key versions (active: {inv.active_index_version}):")
    for version, under in sorted(inv.index_wrapped_under.items()):
        emails = inv.emails_by_index_version.get(version, 0)
        mark = "active" if version == inv.active_index_version else "stale"
        lines.append(f"  version {version}: {emails} emails, wrapped under {under}  [{mark}]")
    for version, wrapping in sorted(inv.material_keys.items()):
        lines.append(
            f"  material version {version}: wrapped under {wrapping or 'an unrecorded key'}"
        )
    lines.append(f"tombstones: {inv.tombstones}")
    lines.append("user records per record format:")
    for layout, count in sorted(inv.records_by_format.items()):
        mark = "current" if layout == RECORD_FORMAT else "old: the sweep upgrades it"
        lines.append(f"  {count:8d}  format {layout}  [{mark}]")
    if inv.payload is not None:
        lines.append(f"payload key (sealed events): {inv.payload.active or 'not provisioned'}")
        lines.append(f"  messages in the queue and dead-letter queue: {inv.payload.queued}")
    if inv.storage_key is not None:
        lines.append(
            f"storage key (tables and queues, server-side): {inv.storage_key} "
            "(rotate it with KMS automatic rotation: nothing to re-encrypt)"
        )
    old = inv.old_keys()
    for key in old:
        needs = inv.uses(key)
        if needs:
            lines.append(f"old key {key} is still needed: {'; '.join(needs)}")
        else:
            lines.append(f"old key {key}: nothing userstore holds needs it")
    if inv.stale:
        lines.append(f"{inv.stale} records to re-encrypt: run `userstore sweep`")
    if inv.old_format:
        lines.append(f"{inv.old_format} records in an old format: run `userstore sweep`")
    for version in inv.unused_index_versions():
        lines.append(
            f"blind-index key version {version} is used by no record: retire it with "
            f"`userstore rotation retire-index-key {version}`"
        )
    if inv.retirable():
        lines.append("old keys can be retired" if old else "no old keys")
    else:
        lines.append(
            "old keys can NOT be retired yet: run `userstore sweep` (it re-encrypts records and "
            "moves the control records and index keys), then check again"
        )
    return lines
