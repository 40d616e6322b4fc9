"""Keys without AWS: local wrapping and signing keys per KeyRef, and an in-memory key service.

LocalKeys is a `worker.crypto.KeySource`, so tests seal and open records with the real
ItemCipher (dynamodb-encryption-sdk, local wrapped materials: pure CPU). A key can be made
unavailable, which raises what KMS would (a botocore ClientError the cipher translates).
MemoryKeyService implements `worker.ports.KeyService`.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from dynamodb_encryption_sdk.delegated_keys.jce import JceNameLocalDelegatedKey
from dynamodb_encryption_sdk.identifiers import EncryptionKeyType, KeyEncodingType
from dynamodb_encryption_sdk.material_providers.wrapped import (
    WrappedCryptographicMaterialsProvider,
)
from dynamodb_encryption_sdk.structures import EncryptionContext

from userstore.worker.crypto import ItemCipher
from userstore.worker.errors import KeyUnavailable, RecordTampered
from userstore.worker.index_keys import WrappedKey
from userstore.worker.keyref import KeyRef

ACCOUNT = "arn:aws:kms:eu-west-2:111122223333:key/"


def kms_ref(name: str) -> KeyRef:
    return KeyRef.kms(ACCOUNT + name)


def _provider() -> WrappedCryptographicMaterialsProvider:
    def key(algorithm: str, kind: EncryptionKeyType) -> JceNameLocalDelegatedKey:
        return JceNameLocalDelegatedKey(os.urandom(32), algorithm, kind, KeyEncodingType.RAW)

    wrapping = key("AES", EncryptionKeyType.SYMMETRIC)
    return WrappedCryptographicMaterialsProvider(
        signing_key=key("HmacSHA256", EncryptionKeyType.SYMMETRIC),
        wrapping_key=wrapping,
        unwrapping_key=wrapping,
    )


def kms_refused(code: str = "KMSInternalException") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "fake"}}, "Decrypt")


class LocalKeys:
    """A KeySource with one local key per KeyRef; `unavailable` keys fail as KMS would."""

    def __init__(self, active: KeyRef) -> None:
        self._providers: dict[KeyRef, Any] = {}
        self.unavailable: set[KeyRef] = set()
        self._active = active
        self._provider(active)

    def _provider(self, ref: KeyRef) -> Any:
        if ref not in self._providers:
            self._providers[ref] = _provider()
        return self._providers[ref]

    def _check(self, ref: KeyRef) -> None:
        if ref in self.unavailable:
            raise kms_refused()

    def encryption_materials(self, context: EncryptionContext) -> tuple[Any, KeyRef]:
        ref = self._active
        self._check(ref)
        return self._provider(ref).encryption_materials(context), ref

    def decrypting_provider(self, key_ref: KeyRef) -> Any:
        if key_ref not in self._providers:
            raise RecordTampered("no such local key")
        self._check(key_ref)
        return self._provider(key_ref)

    def active_ref(self) -> KeyRef:
        return self._active

    def activate(self, key_ref: KeyRef) -> None:
        self._provider(key_ref)
        self._active = key_ref


def local_cipher(
    active: KeyRef, *, table: str = "users", executor: Executor | None = None
) -> tuple[ItemCipher, LocalKeys]:
    """The real ItemCipher over LocalKeys (every key it seals under is a known one)."""
    keys = LocalKeys(active)
    cipher = ItemCipher(keys, table, executor or ThreadPoolExecutor(max_workers=1), active)
    return cipher, keys


@dataclass
class MemoryKeyService:
    """The key service in memory: aliases to keys, index keys "wrapped" by tagging them."""

    aliases: dict[str, KeyRef] = field(default_factory=dict)
    down: bool = False  # every call raises KeyUnavailable, as an unreachable KMS would
    kms_alias: str = "alias/userstore"
    payload_alias: str = "alias/userstore-payload"

    def _up(self) -> None:
        if self.down:
            raise KeyUnavailable("key service refused (fake)")

    async def resolve(self, key_id: str) -> KeyRef:
        self._up()
        return self.aliases.get(key_id) or KeyRef.kms(key_id)

    async def active_kms_key(self) -> KeyRef:
        return await self.resolve(self.kms_alias)

    async def payload_key(self) -> KeyRef:
        return await self.resolve(self.payload_alias)

    async def point_alias(self, alias: str, to: KeyRef) -> None:
        self._up()
        self.aliases[alias] = to

    async def new_index_key(self, under: KeyRef, version: int) -> WrappedKey:
        self._up()
        return WrappedKey(os.urandom(32), under)

    async def unwrap_index_key(self, wrapped: WrappedKey, version: int) -> tuple[bytes, KeyRef]:
        self._up()
        assert wrapped.key is not None
        return wrapped.blob, wrapped.key

    async def rewrap_index_key(self, wrapped: WrappedKey, version: int, to: KeyRef) -> WrappedKey:
        self._up()
        return WrappedKey(wrapped.blob, to)
