"""The blind-index keys as the index-keys control record stores them: wrapped under KMS keys.

Unwrapped only into this process's memory (`load_index`); re-wrapped under a new KMS key by KMS
itself (`rewrapped_index`), so the plaintext key never travels.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from .blind_index import EmailIndex, IndexKeys
from .control import Body
from .crypto import ItemCipher
from .errors import RecordTampered
from .keyref import KeyRef
from .ports import KeyService


@dataclass(frozen=True)
class WrappedKey:
    """A key encrypted by KMS under `key` (stored base64 in a control record)."""

    blob: bytes
    key: KeyRef | None  # None: written by userstore 0.4, which did not record it

    def to_json(self) -> dict[str, str] | str:
        encoded = base64.b64encode(self.blob).decode()
        return encoded if self.key is None else {"wrapped": encoded, "key": str(self.key)}

    @classmethod
    def from_json(cls, value: Any) -> WrappedKey:
        if isinstance(value, str):
            return cls(base64.b64decode(value), None)
        return cls(base64.b64decode(value["wrapped"]), KeyRef.parse(value["key"]))


@dataclass(frozen=True)
class IndexVersion:
    version: int
    wrapped: WrappedKey
    under: KeyRef  # the KMS key that wraps it (asked of KMS when the body did not record it)


async def load_index(
    keys: KeyService, cipher: ItemCipher, body: Body
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
        key, under = await keys.unwrap_index_key(wrapped, version)
        if under not in cipher.known_keys:
            raise RecordTampered(f"index key version {version} is wrapped under an unknown key")
        plain[version] = key
        versions[version] = IndexVersion(version, wrapped, under)
    return EmailIndex(plain, int(body["active"])), versions


async def adopt_index(keys: KeyService, cipher: ItemCipher, index: IndexKeys, body: Body) -> None:
    """Use the index keys of an index-keys control body from now on."""
    index.current, index.versions = await load_index(keys, cipher, body)


def adopt_rewrapped(index: IndexKeys, body: Body) -> None:
    """The same keys, wrapped anew: only where each is wrapped changed, no need to unwrap."""
    index.versions = {
        int(text): IndexVersion(int(text), wrapped, wrapped.key)
        for text, wrapped in ((t, WrappedKey.from_json(v)) for t, v in body["versions"].items())
        if wrapped.key is not None
    }


async def rewrapped_index(keys: KeyService, body: Body) -> Body:
    """The index-keys body with every version wrapped under the active KMS key."""
    to = await keys.active_kms_key()
    versions: dict[str, Any] = {}
    for text, value in body["versions"].items():
        wrapped = WrappedKey.from_json(value)
        if wrapped.key != to:
            wrapped = await keys.rewrap_index_key(wrapped, int(text), to)
        versions[text] = wrapped.to_json()
    return {**body, "versions": versions}
