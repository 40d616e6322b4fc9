"""Key rotation: switching the active key and moving the control records and index keys to it.

The *authority* on which key is active is outside the table (worker.authority). The active-key
control record announces a change to every replica (worker.follow); a replica switches only
after checking it against the authority.

What a rotation moves, so that the old key can really be retired (docs/keys.md):
- user records: the re-encryption job (the sweep) and the stream reader, via worker.reseal;
- the control records: re-sealed under the new key by `rotate` itself and again by the job;
- the blind-index keys: re-wrapped under the new KMS key with KMS ReEncrypt (the plaintext key
  never enters the process), by `rotate` and the job;
- `cached` mode: rotating the KMS key makes a new material version wrapped under it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from .authority import cached_keys
from .control import ACTIVE_KEY, INDEX_KEYS, Body
from .errors import OperationRefused
from .follow import FollowContext, accept_payload_keys
from .index_keys import adopt_index, adopt_rewrapped, rewrapped_index
from .keyref import KeyRef
from .logs import get_logger
from .settings import KeyMode

log = get_logger("userstore.rotation")

# Rotating needs what following needs: the authority, the control records, the follower.
RotationContext = FollowContext


async def ensure_controls(ctx: RotationContext) -> None:
    """Create the control records if this table has none yet (conditional: replicas agree)."""
    controls = ctx.controls
    if await controls.read(INDEX_KEYS) is None:
        under = await ctx.keys.active_kms_key()
        wrapped = await ctx.keys.new_index_key(under, 1)
        await controls.write(
            INDEX_KEYS, {"active": 1, "versions": {"1": wrapped.to_json()}}, expected_rev=None
        )
    if await controls.read(ACTIVE_KEY) is None:
        active = str(ctx.cipher.active)
        body: Body = {"active_key_ref": active, "history": [active]}
        if ctx.settings.key_mode is KeyMode.CACHED:
            body["material_keys"] = {
                str(ctx.cipher.active.version): str(cached_keys(ctx.cipher).wrapping_key)
            }
        await controls.write(ACTIVE_KEY, body, expected_rev=None)


async def move_controls(ctx: RotationContext) -> bool:
    """Re-seal the control records under the active key and re-wrap the index keys under the
    active KMS key, content unchanged. Idempotent; True if anything was written."""

    async def same(body: Body) -> Body:
        return body

    async def rewrap(body: Body) -> Body:
        return await rewrapped_index(ctx.keys, body)

    _, active_moved = await ctx.controls.update(ACTIVE_KEY, same)
    body, index_moved = await ctx.controls.update(INDEX_KEYS, rewrap)
    if index_moved:
        adopt_rewrapped(ctx.index, body)
    return active_moved or index_moved


async def rotate_key(ctx: RotationContext, to: str) -> KeyRef:
    """Make `to` the active key and move the control records and index keys to it.

    kms mode: `to` is a KMS key id, ARN or alias. cached mode: `new` or a version number (a new
    material version under the same KMS key), or a KMS key (the material versions' wrapping key
    rotates: a new version is made under it).
    """
    settings = ctx.settings
    if settings.key_mode is KeyMode.KMS:
        new_kms = await _point_alias(ctx, to)
        new_ref = new_kms
    elif to == "new" or to.isdigit():
        new_ref = await _new_material_version(ctx, None if to == "new" else int(to))
    else:
        new_kms = await _point_alias(ctx, to)
        keys = cached_keys(ctx.cipher)
        await ctx.cipher.run(lambda: keys.rewrap_under(new_kms))
        new_ref = await _new_material_version(ctx, None)
    await ctx.cipher.activate(new_ref)
    wrapping = cached_keys(ctx.cipher).wrapping_key if settings.key_mode is KeyMode.CACHED else None
    await _update_active(ctx, lambda body: history_entry(body, new_ref, wrapping))
    ctx.follower.followed = str(new_ref)
    await move_controls(ctx)
    log.info("rotation.key_activated", key_ref=str(new_ref))
    return new_ref


async def _point_alias(ctx: RotationContext, to: str) -> KeyRef:
    if not ctx.settings.kms_key.startswith("alias/"):
        raise OperationRefused("rotation needs USERSTORE_KMS_KEY to be an alias")
    new_kms = await ctx.keys.resolve(to)
    await ctx.keys.point_alias(ctx.settings.kms_key, new_kms)
    ctx.cipher.learn([new_kms])  # the alias's key now: the authority vouches for it
    return new_kms


async def _new_material_version(ctx: RotationContext, version: int | None) -> KeyRef:
    keys = cached_keys(ctx.cipher)
    newest = await ctx.cipher.run(keys.max_version)
    version = newest + 1 if version is None else version
    if version <= newest:
        raise OperationRefused(f"material version {version} is not newer than {newest}")
    return await ctx.cipher.run(lambda: keys.create_version(version))


async def rotate_payload_key(ctx: RotationContext, to: str) -> KeyRef:
    """Point the payload alias at `to`; the previous payload key stays accepted (messages sealed
    under it may still sit in the queues) until `rotation status` says it can be retired."""
    alias = ctx.settings.payload_kms_key
    if not alias.startswith("alias/"):
        raise OperationRefused(
            "payload key rotation needs USERSTORE_PAYLOAD_KMS_KEY to be an alias"
        )
    old = await ctx.keys.payload_key()
    new = await ctx.keys.resolve(to)
    if new == old:
        raise OperationRefused(f"{new} is already the payload key")
    await ctx.keys.point_alias(alias, new)
    now = datetime.now(UTC).isoformat()

    def change(body: Body) -> Body:
        payload = body.get("payload", {})
        previous = [p for p in payload.get("previous", []) if p["key"] not in (str(old), str(new))]
        previous.append({"key": str(old), "rotated_at": now})
        return {**body, "payload": {"active": str(new), "previous": previous}}

    body = await _update_active(ctx, change)
    accept_payload_keys(ctx.payload_opener, body)
    log.info("rotation.payload_key_activated", key_ref=str(new))
    return new


async def rotate_index_key(ctx: RotationContext) -> int:
    """A new blind-index key version becomes active; the sweep re-indexes every email."""
    new_version = 0

    async def change(body: Body) -> Body:
        nonlocal new_version
        new_version = max(int(v) for v in body["versions"]) + 1
        under = await ctx.keys.active_kms_key()
        wrapped = await ctx.keys.new_index_key(under, new_version)
        versions = {**body["versions"], str(new_version): wrapped.to_json()}
        return {"active": new_version, "versions": versions}

    body, _ = await ctx.controls.update(INDEX_KEYS, change)
    await adopt_index(ctx.keys, ctx.cipher, ctx.index, body)
    # Every stored email token must be recomputed: that is the re-encryption job's work too.
    await _update_active(ctx, lambda b: {**b, "reencrypt_pending": True})
    log.info("rotation.index_key_activated", version=new_version)
    return new_version


async def retire_index_version(ctx: RotationContext, version: int, in_use: int) -> None:
    """Drop an index key version no record uses any more (`in_use`: records counted under it)."""
    if in_use:
        raise OperationRefused(
            f"{in_use} records still use index key version {version}: run `userstore sweep`"
        )

    async def change(body: Body) -> Body:
        if int(body["active"]) == version:
            raise OperationRefused(f"index key version {version} is the active one")
        if str(version) not in body["versions"]:
            raise OperationRefused(f"there is no index key version {version}")
        versions = {k: v for k, v in body["versions"].items() if k != str(version)}
        return {**body, "versions": versions}

    body, _ = await ctx.controls.update(INDEX_KEYS, change)
    await adopt_index(ctx.keys, ctx.cipher, ctx.index, body)
    log.info("rotation.index_key_retired", version=version)


async def _update_active(ctx: RotationContext, change: Callable[[Body], Body]) -> Body:
    async def async_change(body: Body) -> Body:
        return change(body)

    body, _ = await ctx.controls.update(ACTIVE_KEY, async_change)
    return body


async def job_done(ctx: RotationContext, key_ref: KeyRef) -> None:
    """Clear the pending re-encryption job, unless another rotation happened meanwhile."""

    def clear(body: Body) -> Body:
        if body.get("active_key_ref") != str(key_ref):
            return body
        return {**body, "reencrypt_pending": False}

    await _update_active(ctx, clear)


def history_entry(body: Body, new_ref: KeyRef, wrapping: KeyRef | None) -> Body:
    """The active-key body after `new_ref` became active (`wrapping`: cached mode's KMS key)."""
    text = str(new_ref)
    history = [r for r in body.get("history", []) if r != text] + [text]
    updated: Body = {
        **body,
        "active_key_ref": text,
        "history": history,
        "changed_at": datetime.now(UTC).isoformat(),
        "reencrypt_pending": True,
    }
    if wrapping is not None:
        updated["material_keys"] = {
            **body.get("material_keys", {}),
            str(new_ref.version): str(wrapping),
        }
    return updated
