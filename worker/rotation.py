"""Key rotation: switching the active key, moving everything sealed under the old one, following.

The *authority* on which key is active is outside the table, where a table writer can't reach:
the KMS alias (`kms` mode) or the newest material version in the meta store (`cached` mode).
The active-key control record announces a change to every replica (they poll it, and the
stream brings it at once); a replica switches only after checking it against the authority.

What a rotation moves, so that the old key can really be retired (docs/keys.md):
- user records: the re-encryption job (the sweep) and the stream reader, via Resealer;
- the control records: re-sealed under the new key by `rotate` itself and again by the job;
- the blind-index keys: re-wrapped under the new KMS key with KMS ReEncrypt (the plaintext key
  never enters the process), by `rotate` and the job;
- `cached` mode: rotating the KMS key makes a new material version wrapped under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from . import profile
from .blind_index import EmailIndex
from .control import ACTIVE_KEY, INDEX_KEYS, Body, Control
from .crypto import CachedKeys, ItemCipher
from .errors import ControlRolledBack, OperationRefused, RecordTampered, WriteConflict
from .keyref import KeyKind, KeyRef
from .keyservice import KeyService, WrappedKey
from .logs import get_logger
from .record import RecordHead, from_item, to_item
from .settings import KeyMode
from .store import RecordStore, StoredRecord

if TYPE_CHECKING:
    from .app import Components
    from .blind_index import IndexKeys

log = get_logger("userstore.rotation")


@dataclass(frozen=True)
class Target:
    """What a current record looks like: sealed under this key, email indexed with this version."""

    key_ref: KeyRef
    index_version: int

    def is_stale(self, head: RecordHead) -> bool:
        if head.key_ref != str(self.key_ref):
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


# --- the authority ------------------------------------------------------------------------


async def authority_ref(parts: Components) -> KeyRef:
    """The key_ref new records must carry, asked of the authority itself."""
    if parts.settings.key_mode is KeyMode.KMS:
        return await parts.keys.active_kms_key()
    return await parts.cipher.active_ref()


async def current_target(parts: Components) -> Target:
    return Target(await authority_ref(parts), parts.index.current.active_version)


def _cached(parts: Components) -> CachedKeys:
    keys = parts.cipher.keys
    assert isinstance(keys, CachedKeys)
    return keys


# --- the blind-index keys -------------------------------------------------------------------


@dataclass(frozen=True)
class IndexVersion:
    version: int
    wrapped: WrappedKey
    under: KeyRef  # the KMS key that wraps it (asked of KMS when the body did not record it)


async def load_index(
    parts_keys: KeyService, cipher: ItemCipher, body: Body
) -> tuple[EmailIndex, dict[int, IndexVersion]]:
    """Unwrap every index key version of an index-keys control body.

    A key wrapped under a KMS key this store has never used is refused as tampering: someone
    who could seal a control record under a key of their own must not choose our index keys.
    """
    plain: dict[int, bytes] = {}
    versions: dict[int, IndexVersion] = {}
    for text, value in body["versions"].items():
        version = int(text)
        wrapped = WrappedKey.from_json(value)
        if wrapped.key is not None and wrapped.key not in cipher.known_keys:
            raise RecordTampered(f"index key version {version} is wrapped under an unknown key")
        key, under = await parts_keys.unwrap_index_key(wrapped, version)
        if under not in cipher.known_keys:
            raise RecordTampered(f"index key version {version} is wrapped under an unknown key")
        plain[version] = key
        versions[version] = IndexVersion(version, wrapped, under)
    return EmailIndex(plain, int(body["active"])), versions


async def _rewrapped_index(parts: Components, body: Body) -> Body:
    """The index-keys body with every version wrapped under the active KMS key."""
    to = await parts.keys.active_kms_key()
    versions: dict[str, Any] = {}
    for text, value in body["versions"].items():
        wrapped = WrappedKey.from_json(value)
        if wrapped.key != to:
            wrapped = await parts.keys.rewrap_index_key(wrapped, int(text), to)
        versions[text] = wrapped.to_json()
    return {**body, "versions": versions}


async def ensure_controls(parts: Components) -> None:
    """Create the control records if this table has none yet (conditional: replicas agree)."""
    controls = parts.controls
    if await controls.read(INDEX_KEYS) is None:
        under = await parts.keys.active_kms_key()
        wrapped = await parts.keys.new_index_key(under, 1)
        await controls.write(
            INDEX_KEYS, {"active": 1, "versions": {"1": wrapped.to_json()}}, expected_rev=None
        )
    if await controls.read(ACTIVE_KEY) is None:
        active = str(parts.cipher.active)
        body: Body = {"active_key_ref": active, "history": [active]}
        if parts.settings.key_mode is KeyMode.CACHED:
            body["material_keys"] = {
                str(parts.cipher.active.version): str(_cached(parts).wrapping_key)
            }
        await controls.write(ACTIVE_KEY, body, expected_rev=None)


async def move_controls(parts: Components) -> bool:
    """Re-seal the control records under the active key and re-wrap the index keys under the
    active KMS key, content unchanged. Idempotent; True if anything was written."""

    async def same(body: Body) -> Body:
        return body

    async def rewrap(body: Body) -> Body:
        return await _rewrapped_index(parts, body)

    _, active_moved = await parts.controls.update(ACTIVE_KEY, same)
    body, index_moved = await parts.controls.update(INDEX_KEYS, rewrap)
    if index_moved:
        # The same keys, wrapped anew: only where each is wrapped changed, no need to unwrap.
        parts.index.versions = {
            int(text): IndexVersion(int(text), wrapped, wrapped.key)
            for text, wrapped in ((t, WrappedKey.from_json(v)) for t, v in body["versions"].items())
            if wrapped.key is not None
        }
    return active_moved or index_moved


async def _adopt_index(parts: Components, body: Body) -> None:
    """Use the index keys of an index-keys control body from now on."""
    parts.index.current, parts.index.versions = await load_index(parts.keys, parts.cipher, body)


# --- rotating ---------------------------------------------------------------------------------


async def rotate_key(parts: Components, to: str) -> KeyRef:
    """Make `to` the active key and move the control records and index keys to it.

    kms mode: `to` is a KMS key id, ARN or alias. cached mode: `new` or a version number (a new
    material version under the same KMS key), or a KMS key (the material versions' wrapping key
    rotates: a new version is made under it).
    """
    settings = parts.settings
    if settings.key_mode is KeyMode.KMS:
        new_kms = await _point_alias(parts, to)
        new_ref = new_kms
    elif to == "new" or to.isdigit():
        new_ref = await _new_material_version(parts, None if to == "new" else int(to))
    else:
        new_kms = await _point_alias(parts, to)
        keys = _cached(parts)
        await parts.cipher.run(lambda: keys.rewrap_under(new_kms))
        new_ref = await _new_material_version(parts, None)
    await parts.cipher.activate(new_ref)
    wrapping = _cached(parts).wrapping_key if settings.key_mode is KeyMode.CACHED else None
    await _update_active(parts, lambda body: history_entry(body, new_ref, wrapping))
    parts.follower.followed = str(new_ref)
    await move_controls(parts)
    log.info("rotation.key_activated", key_ref=str(new_ref))
    return new_ref


async def _point_alias(parts: Components, to: str) -> KeyRef:
    settings = parts.settings
    if not settings.kms_key.startswith("alias/"):
        raise OperationRefused("rotation needs USERSTORE_KMS_KEY to be an alias")
    new_kms = await parts.keys.resolve(to)
    await parts.keys.point_alias(settings.kms_key, new_kms)
    parts.cipher.learn([new_kms])  # the alias's key now: the authority vouches for it
    return new_kms


async def _new_material_version(parts: Components, version: int | None) -> KeyRef:
    keys = _cached(parts)
    newest = await parts.cipher.run(keys.max_version)
    version = newest + 1 if version is None else version
    if version <= newest:
        raise OperationRefused(f"material version {version} is not newer than {newest}")
    return await parts.cipher.run(lambda: keys.create_version(version))


async def rotate_payload_key(parts: Components, to: str) -> KeyRef:
    """Point the payload alias at `to`; the previous payload key stays accepted (messages sealed
    under it may still sit in the queues) until `rotation status` says it can be retired."""
    alias = parts.settings.payload_kms_key
    if not alias.startswith("alias/"):
        raise OperationRefused(
            "payload key rotation needs USERSTORE_PAYLOAD_KMS_KEY to be an alias"
        )
    old = await parts.keys.payload_key()
    new = await parts.keys.resolve(to)
    if new == old:
        raise OperationRefused(f"{new} is already the payload key")
    await parts.keys.point_alias(alias, new)
    now = datetime.now(UTC).isoformat()

    def change(body: Body) -> Body:
        payload = body.get("payload", {})
        previous = [p for p in payload.get("previous", []) if p["key"] not in (str(old), str(new))]
        previous.append({"key": str(old), "rotated_at": now})
        return {**body, "payload": {"active": str(new), "previous": previous}}

    body = await _update_active(parts, change)
    _accept_payload_keys(parts, body)
    log.info("rotation.payload_key_activated", key_ref=str(new))
    return new


def payload_history(body: Body) -> list[tuple[KeyRef, datetime]]:
    """Earlier payload keys and when each stopped being the active one."""
    found = []
    for entry in body.get("payload", {}).get("previous", []):
        try:
            found.append((KeyRef.parse(entry["key"]), datetime.fromisoformat(entry["rotated_at"])))
        except (KeyError, TypeError, ValueError):
            continue
    return found


def _accept_payload_keys(parts: Components, body: Body) -> None:
    previous = [key.arn for key, _ in payload_history(body) if key.kind is KeyKind.KMS]
    parts.payload_opener.accept(None, previous)  # None: the alias names the active one


async def rotate_index_key(parts: Components) -> int:
    """A new blind-index key version becomes active; the sweep re-indexes every email."""
    new_version = 0

    async def change(body: Body) -> Body:
        nonlocal new_version
        new_version = max(int(v) for v in body["versions"]) + 1
        under = await parts.keys.active_kms_key()
        wrapped = await parts.keys.new_index_key(under, new_version)
        versions = {**body["versions"], str(new_version): wrapped.to_json()}
        return {"active": new_version, "versions": versions}

    body, _ = await parts.controls.update(INDEX_KEYS, change)
    await _adopt_index(parts, body)
    # Every stored email token must be recomputed: that is the re-encryption job's work too.
    await _update_active(parts, lambda b: {**b, "reencrypt_pending": True})
    log.info("rotation.index_key_activated", version=new_version)
    return new_version


async def retire_index_version(parts: Components, version: int, in_use: int) -> None:
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

    body, _ = await parts.controls.update(INDEX_KEYS, change)
    await _adopt_index(parts, body)
    log.info("rotation.index_key_retired", version=version)


async def _update_active(parts: Components, change: Any) -> Body:
    async def async_change(body: Body) -> Body:
        result: Body = change(body)
        return result

    body, _ = await parts.controls.update(ACTIVE_KEY, async_change)
    return body


async def job_done(parts: Components, key_ref: KeyRef) -> None:
    """Clear the pending re-encryption job, unless another rotation happened meanwhile."""

    def clear(body: Body) -> Body:
        if body.get("active_key_ref") != str(key_ref):
            return body
        return {**body, "reencrypt_pending": False}

    await _update_active(parts, clear)


# --- following ----------------------------------------------------------------------------------


@dataclass
class Follower:
    """What one process has adopted from the control records, so it acts only on a change."""

    followed: str | None = None  # the last announcement acted on (or refused)
    payload: Any = None  # the payload-key section last adopted


async def _read_following(parts: Components, control_id: str) -> Control | None:
    """A control record, or after a rollback (a replay) the newer one this process restores."""
    try:
        return await parts.controls.read(control_id)
    except ControlRolledBack as exc:
        log.error("security.control_record_rolled_back", control_id=control_id, reason=exc.reason)
        if await parts.controls.restore(control_id):
            log.warning("control.restored", control_id=control_id)
        return parts.controls.newest_seen(control_id)


async def follow_control(parts: Components) -> bool:
    """Adopt the active key and index keys the control records announce, if the authority agrees.

    Returns True when something changed. Only a change is acted on: an announcement already
    followed (or refused) is not checked against the authority again. A control record naming a
    key the authority does not confirm is refused and logged as a security event: only a forger
    or a half-done rotation writes one.
    """
    changed = False
    state = parts.follower
    active = await _read_following(parts, ACTIVE_KEY)
    if active is not None:
        # Only a record sealed under a key of ours may tell us which keys are ours. (A material
        # version is ours if the meta store has it: opening the record checked that.)
        if active.key_ref in parts.cipher.known_keys or active.key_ref.kind is KeyKind.MATERIALS:
            parts.cipher.learn(_history_refs(active.body))
            if active.body.get("payload") != state.payload:
                state.payload = active.body.get("payload")
                _accept_payload_keys(parts, active.body)
        announced = str(active.body["active_key_ref"])
        if announced != state.followed:
            state.followed = announced
            confirmed = await authority_ref(parts)
            if announced != str(confirmed):
                log.error("security.control_record_not_confirmed", announced=announced)
            elif parts.cipher.active != confirmed:
                if confirmed.kind is KeyKind.MATERIALS:  # the versions' KMS key may be new too
                    parts.cipher.learn([await parts.keys.active_kms_key()])
                await parts.cipher.activate(confirmed)
                log.info("rotation.key_followed", key_ref=announced)
                changed = True
    index = await _read_following(parts, INDEX_KEYS)
    loaded = bool(parts.index.versions)
    if index is not None and (
        not loaded or int(index.body["active"]) != parts.index.current.active_version
    ):
        await _adopt_index(parts, index.body)
        if loaded:  # not at start-up: a change another process made
            log.info("rotation.index_key_followed", version=parts.index.current.active_version)
            changed = True
    return changed


def _history_refs(body: Body) -> list[KeyRef]:
    """Every key the active-key body says this store has sealed under (both kinds)."""
    texts = [
        body.get("active_key_ref", ""),
        *body.get("history", []),
        *body.get("material_keys", {}).values(),
    ]
    refs = []
    for text in texts:
        try:
            refs.append(KeyRef.parse(str(text)))
        except ValueError:
            continue
    return refs


async def follow_authority(parts: Components) -> Target:
    """Follow the control records, seal under the authority's key, and return the target.

    The stream handler's idea of "stale" must match what this replica seals under, or it would
    re-encrypt records into the key they are already under. Both come from the authority.
    """
    await follow_control(parts)
    target = await current_target(parts)
    if parts.cipher.active != target.key_ref:
        await parts.cipher.activate(target.key_ref)
    return target


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
