"""Which key is active, asked of the authority outside the table, and what a current record is.

The authority is the KMS alias (`kms` mode) or the newest material version in the meta store
(`cached` mode): a table writer can't reach either.
"""

from __future__ import annotations

from typing import Protocol

from .blind_index import IndexKeys
from .crypto import CachedKeys, ItemCipher
from .keyref import KeyRef
from .ports import KeyService
from .reseal import Target
from .settings import KeyMode, Settings


class AuthorityContext(Protocol):
    """What asking the authority needs (the composition root's object has it all)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def keys(self) -> KeyService: ...

    @property
    def cipher(self) -> ItemCipher: ...

    @property
    def index(self) -> IndexKeys: ...


async def authority_ref(ctx: AuthorityContext) -> KeyRef:
    """The key_ref new records must carry, asked of the authority itself."""
    if ctx.settings.key_mode is KeyMode.KMS:
        return await ctx.keys.active_kms_key()
    return await ctx.cipher.active_ref()


async def current_target(ctx: AuthorityContext) -> Target:
    return Target(await authority_ref(ctx), ctx.index.current.active_version)


def cached_keys(cipher: ItemCipher) -> CachedKeys:
    """`cached` mode's key source (only called in that mode)."""
    keys = cipher.keys
    assert isinstance(keys, CachedKeys)
    return keys
