"""Following a rotation: adopt what the control records announce, once the authority agrees.

A replica polls the control records (and the stream wakes it at once); a rotation another
process made switches this one's active key and index keys here. A control record naming a key
the authority does not confirm is refused and logged as a security event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .authority import AuthorityContext, authority_ref, current_target
from .control import ACTIVE_KEY, INDEX_KEYS, Body, Control, ControlRecords
from .errors import ControlRolledBack
from .index_keys import adopt_index
from .keyref import KeyKind, KeyRef
from .logs import get_logger
from .reseal import Target

log = get_logger("userstore.rotation")


@dataclass
class Follower:
    """What one process has adopted from the control records, so it acts only on a change."""

    followed: str | None = None  # the last announcement acted on (or refused)
    payload: Any = None  # the payload-key section last adopted


class PayloadKeysAccepted(Protocol):
    """Where the payload keys a message may be sealed under are kept (the opener)."""

    def accept(self, active_arn: str | None, previous_arns: Iterable[str]) -> None: ...


class FollowContext(AuthorityContext, Protocol):
    """What following (and rotating) needs besides the authority."""

    @property
    def controls(self) -> ControlRecords: ...

    @property
    def follower(self) -> Follower: ...

    @property
    def payload_opener(self) -> PayloadKeysAccepted: ...


def payload_history(body: Body) -> list[tuple[KeyRef, datetime]]:
    """Earlier payload keys and when each stopped being the active one."""
    found = []
    for entry in body.get("payload", {}).get("previous", []):
        try:
            found.append((KeyRef.parse(entry["key"]), datetime.fromisoformat(entry["rotated_at"])))
        except (KeyError, TypeError, ValueError):
            continue
    return found


def accept_payload_keys(opener: PayloadKeysAccepted, body: Body) -> None:
    previous = [key.arn for key, _ in payload_history(body) if key.kind is KeyKind.KMS]
    opener.accept(None, previous)  # None: the alias names the active one


async def _read_following(controls: ControlRecords, control_id: str) -> Control | None:
    """A control record, or after a rollback (a replay) the newer one this process restores."""
    try:
        return await controls.read(control_id)
    except ControlRolledBack as exc:
        log.error("security.control_record_rolled_back", control_id=control_id, reason=exc.reason)
        if await controls.restore(control_id):
            log.warning("control.restored", control_id=control_id)
        return controls.newest_seen(control_id)


async def follow_control(ctx: FollowContext) -> bool:
    """Adopt the active key and index keys the control records announce, if the authority agrees.

    Returns True when something changed. Only a change is acted on: an announcement already
    followed (or refused) is not checked against the authority again. A control record naming a
    key the authority does not confirm is refused and logged as a security event: only a forger
    or a half-done rotation writes one.
    """
    changed = False
    state = ctx.follower
    cipher = ctx.cipher
    active = await _read_following(ctx.controls, ACTIVE_KEY)
    if active is not None:
        # Only a record sealed under a key of ours may tell us which keys are ours. (A material
        # version is ours if the meta store has it: opening the record checked that.)
        if active.key_ref in cipher.known_keys or active.key_ref.kind is KeyKind.MATERIALS:
            cipher.learn(_history_refs(active.body))
            if active.body.get("payload") != state.payload:
                state.payload = active.body.get("payload")
                accept_payload_keys(ctx.payload_opener, active.body)
        announced = str(active.body["active_key_ref"])
        if announced != state.followed:
            state.followed = announced
            confirmed = await authority_ref(ctx)
            if announced != str(confirmed):
                log.error("security.control_record_not_confirmed", announced=announced)
            elif cipher.active != confirmed:
                if confirmed.kind is KeyKind.MATERIALS:  # the versions' KMS key may be new too
                    cipher.learn([await ctx.keys.active_kms_key()])
                await cipher.activate(confirmed)
                log.info("rotation.key_followed", key_ref=announced)
                changed = True
    index = await _read_following(ctx.controls, INDEX_KEYS)
    loaded = bool(ctx.index.versions)
    if index is not None and (
        not loaded or int(index.body["active"]) != ctx.index.current.active_version
    ):
        await adopt_index(ctx.keys, cipher, ctx.index, index.body)
        if loaded:  # not at start-up: a change another process made
            log.info("rotation.index_key_followed", version=ctx.index.current.active_version)
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


async def follow_authority(ctx: FollowContext) -> Target:
    """Follow the control records, seal under the authority's key, and return the target.

    The stream handler's idea of "stale" must match what this replica seals under, or it would
    re-encrypt records into the key they are already under. Both come from the authority.
    """
    await follow_control(ctx)
    target = await current_target(ctx)
    if ctx.cipher.active != target.key_ref:
        await ctx.cipher.activate(target.key_ref)
    return target
