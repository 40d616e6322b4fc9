"""Item encryption and signing with dynamodb-encryption-sdk, and which key seals a record.

The SDK is synchronous and, with a KMS-backed provider, does network I/O inside every call, so
both directions run on a bounded thread pool, never on the event loop.

Two key modes (settings.KeyMode):
- `kms`: AwsKmsCryptographicMaterialsProvider. A fresh data key per record write, wrapped under
  the KMS key with the table name and user id in the KMS encryption context.
- `cached`: CachingMostRecentProvider over a MetaStore table. Material versions are wrapped under
  the KMS key once; records are sealed under the most recent version with no KMS call.

Every sealed item carries a signed-only `key_ref` (worker.keyref.KeyRef) naming the key ARN or
material version, taken from the very snapshot of materials that sealed it, so rotation can find
stale records without decrypting. Opening names that key to KMS: a data key wrapped under any
other key is refused as tampering (see ItemCipher).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from dynamodb_encryption_sdk.encrypted import CryptoConfig
from dynamodb_encryption_sdk.encrypted.item import decrypt_dynamodb_item, encrypt_dynamodb_item
from dynamodb_encryption_sdk.exceptions import NoKnownVersionError
from dynamodb_encryption_sdk.identifiers import CryptoAction
from dynamodb_encryption_sdk.material_providers import CryptographicMaterialsProvider
from dynamodb_encryption_sdk.material_providers.aws_kms import AwsKmsCryptographicMaterialsProvider
from dynamodb_encryption_sdk.material_providers.most_recent import CachingMostRecentProvider
from dynamodb_encryption_sdk.material_providers.store.meta import MetaStore
from dynamodb_encryption_sdk.structures import AttributeActions, EncryptionContext

from .aws import error_code
from .errors import KeyUnavailable, RecordTampered
from .keyref import InvalidKeyRef, KeyKind, KeyRef
from .record import KEY_REF, PARTITION_KEY, SIGN_ONLY, Item

T = TypeVar("T")

# The SDK logs a full traceback (at ERROR) for every KMS refusal before raising; we translate
# and log those errors ourselves, once, without the noise.
logging.getLogger("dynamodb_encryption_sdk").setLevel(logging.CRITICAL)

META_ID = "amzn-ddb-meta-id"
# KMS answers that mean "this ciphertext is not what it claims to be", as opposed to "try later".
_TAMPER_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})

ATTRIBUTE_ACTIONS = AttributeActions(
    default_action=CryptoAction.ENCRYPT_AND_SIGN,
    attribute_actions={name: CryptoAction.SIGN_ONLY for name in SIGN_ONLY},
)


class KeySource(Protocol):
    """Where sealing materials come from: the active key, and providers that open any record."""

    def encryption_materials(self, context: EncryptionContext) -> tuple[Any, KeyRef]:
        """Materials for one record, and the reference to the key they are wrapped under.

        Both come from one snapshot: a concurrent `activate` can't make the reference name a
        key other than the one that wrapped these materials.
        """
        ...

    def decrypting_provider(self, key_ref: KeyRef) -> Any:
        """A provider that opens only what `key_ref` sealed (anything else fails as tampering)."""
        ...

    def active_ref(self) -> KeyRef:
        """The reference new records should carry, per the key authority (blocking)."""
        ...

    def activate(self, key_ref: KeyRef) -> None:
        """Seal new records under `key_ref` from now on (already checked against the authority)."""
        ...


class _NamingClient:
    """A KMS client whose Decrypt names the key: KMS then refuses (IncorrectKeyException) a data
    key wrapped under any other key, instead of finding "its" key from the opaque ciphertext."""

    def __init__(self, client: Any, key_id: str) -> None:
        self._client = client
        self._key_id = key_id

    def decrypt(self, **params: Any) -> Any:
        return self._client.decrypt(KeyId=self._key_id, **params)

    def generate_data_key(self, **params: Any) -> Any:
        return self._client.generate_data_key(**params)


class _KeyNamedProvider(AwsKmsCryptographicMaterialsProvider):  # type: ignore[misc]
    def _client(self, key_id: str) -> Any:
        return _NamingClient(super()._client(key_id), key_id)


class KmsKeys:
    """`kms` mode: a fresh data key per record, under the active KMS key."""

    def __init__(self, active: KeyRef, kms_client: Any) -> None:
        self._kms_client = kms_client  # a boto3 KMS client; the SDK calls it from the thread pool
        self._providers: dict[KeyRef, Any] = {}
        self._lock = threading.Lock()
        self._active = (active, self._provider_for(active))

    def _provider_for(self, key_ref: KeyRef) -> Any:
        with self._lock:
            provider = self._providers.get(key_ref)
            if provider is None:
                provider = _KeyNamedProvider(
                    key_id=key_ref.arn, regional_clients={key_ref.region: self._kms_client}
                )
                self._providers[key_ref] = provider
            return provider

    def encryption_materials(self, context: EncryptionContext) -> tuple[Any, KeyRef]:
        key_ref, provider = self._active  # one read: the pair can't change under us
        return provider.encryption_materials(context), key_ref

    def decrypting_provider(self, key_ref: KeyRef) -> Any:
        if key_ref.kind is not KeyKind.KMS:
            raise RecordTampered("record names a material version, but the store is in kms mode")
        return self._provider_for(key_ref)

    def active_ref(self) -> KeyRef:
        return self._active[0]

    def activate(self, key_ref: KeyRef) -> None:
        # One reference swap: threads sealing right now finish with the old pair.
        self._active = (key_ref, self._provider_for(key_ref))


class _ExpectVersion(CryptographicMaterialsProvider):  # type: ignore[misc]
    """Opens a record only if its material description names the version its key_ref does.

    The description is not covered by the signature; key_ref is. A mismatch is tampering."""

    def __init__(self, provider: Any, key_ref: KeyRef) -> None:
        self._provider = provider
        self._meta_id = f"{key_ref.name}#{key_ref.version}"  # how the SDK writes it

    def decryption_materials(self, encryption_context: EncryptionContext) -> Any:
        if encryption_context.material_description.get(META_ID) != self._meta_id:
            raise RecordTampered("material version does not match the record's key_ref")
        return self._provider.decryption_materials(encryption_context)


class CachedKeys:
    """`cached` mode: material versions kept in a meta-store table, cached in memory.

    Versions are wrapped under the KMS key `wrapping_key`; rotating that key (`rewrap_under`)
    makes new versions wrap under the new key, and the sweep moves records to them.
    """

    def __init__(
        self,
        meta_store_for: Callable[[KeyRef], MetaStore],
        wrapping_key: KeyRef,
        material_name: str,
        version_ttl_s: float,
    ) -> None:
        self._meta_store_for = meta_store_for
        self.material_name = material_name
        self._version_ttl_s = version_ttl_s
        self.rewrap_under(wrapping_key)

    def rewrap_under(self, wrapping_key: KeyRef) -> None:
        """New material versions are wrapped under `wrapping_key` from now on."""
        meta_store = self._meta_store_for(wrapping_key)
        provider = CachingMostRecentProvider(
            provider_store=meta_store,
            material_name=self.material_name,
            version_ttl=float(self._version_ttl_s),
        )
        self._state = (wrapping_key, meta_store, provider)

    @property
    def wrapping_key(self) -> KeyRef:
        return self._state[0]

    @property
    def meta_store(self) -> MetaStore:
        return self._state[1]

    def encryption_materials(self, context: EncryptionContext) -> tuple[Any, KeyRef]:
        provider = self._state[2]
        materials = provider.encryption_materials(context)
        name, _, version = materials.material_description[META_ID].rpartition("#")
        return materials, KeyRef.materials(name, int(version))

    def decrypting_provider(self, key_ref: KeyRef) -> Any:
        if key_ref.kind is not KeyKind.MATERIALS or key_ref.name != self.material_name:
            raise RecordTampered("record names a key this store does not use")
        return _ExpectVersion(self._state[2], key_ref)

    def max_version(self) -> int:
        """The newest material version; a store with none gets version 0 (as the SDK's own
        provider would on its first seal: the meta store's conditional write settles races)."""
        try:
            return int(self.meta_store.max_version(self.material_name))
        except NoKnownVersionError:
            self.create_version(0)
            return 0

    def active_ref(self) -> KeyRef:
        return KeyRef.materials(self.material_name, self.max_version())

    def create_version(self, version: int) -> KeyRef:
        """A new material version, wrapped under the current wrapping key (blocking)."""
        self.meta_store.get_or_create_provider(self.material_name, version)
        return KeyRef.materials(self.material_name, version)

    def activate(self, key_ref: KeyRef) -> None:
        # The provider re-reads the newest version on its next use.
        self._state[2].refresh()


class _Sealed(CryptographicMaterialsProvider):  # type: ignore[misc]
    """Hands the SDK materials we already fetched, so key_ref can name them inside the signature."""

    def __init__(self, materials: Any) -> None:
        self._materials = materials

    def encryption_materials(self, encryption_context: EncryptionContext) -> Any:
        return self._materials


class ItemCipher:
    """Seals (encrypts and signs) and opens (verifies and decrypts) items off the event loop.

    Opening checks the record's key_ref first: in `kms` mode a record may name only a key this
    store has used (the active key and the history in the active-key control record), and KMS is
    asked to decrypt under exactly that key. A record naming any other key, or whose data key is
    wrapped under a key other than the one it names, is tampering, never an outage.
    """

    # A record naming an unknown key makes us re-read the control records at most this often.
    REFRESH_EVERY_S = 1.0

    def __init__(
        self, keys: KeySource, table_name: str, executor: Executor, active: KeyRef
    ) -> None:
        self._keys = keys
        self._table_name = table_name
        self._executor = executor
        # What this replica seals under, per the authority when it last asked (see activate).
        self.active = active
        # The key_ref of the last record sealed: what this replica wrote under last.
        self.sealing_ref: KeyRef | None = None
        # kms mode: every key this store has sealed under (see `learn`).
        self._known: frozenset[KeyRef] = frozenset({active})
        # Re-reads the control records and the authority (set by the composition root).
        self.refresh_known: Callable[[], Awaitable[object]] | None = None
        self._refreshed_at = float("-inf")

    @property
    def keys(self) -> KeySource:
        return self._keys

    @property
    def known_keys(self) -> frozenset[KeyRef]:
        return self._known

    def learn(self, refs: Iterable[KeyRef]) -> None:
        """Keys this store has sealed under, from a verified source (authority, control record)."""
        self._known = self._known | frozenset(refs)

    async def seal(self, item: Item) -> Item:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._seal, item)

    async def open(self, item: Item, *, control: bool = False) -> Item:
        """The decrypted item; raises RecordTampered if it fails verification.

        `control`: a control record, which may also be sealed under a key of the active key's
        account and region not yet in the history (a rotation half done).
        """
        key_ref = await self._checked_ref(item, control)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._open, item, key_ref)

    async def active_ref(self) -> KeyRef:
        """Asks the authority (cached mode: the meta store), so it may raise KeyUnavailable."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._keys.active_ref)
        except Exception as exc:
            if _aws_cause(exc) is None:
                raise
            raise _key_unavailable(exc, "reading the active key of") from exc

    async def activate(self, key_ref: KeyRef) -> None:
        self.learn([key_ref])
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._keys.activate, key_ref)
        self.active = key_ref

    async def run(self, fn: Callable[[], T]) -> T:
        """Run a blocking key-source call on the crypto pool."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _checked_ref(self, item: Item, control: bool) -> KeyRef:
        try:
            key_ref = KeyRef.parse(item.get(KEY_REF, {}).get("S", ""))
        except InvalidKeyRef:
            raise RecordTampered("stored record names no valid key") from None
        if key_ref.kind is not KeyKind.KMS or self._is_known(key_ref, control):
            return key_ref  # material versions are checked against the meta store
        if self.refresh_known is None:
            raise RecordTampered("stored record names a key this store has never used")
        now = time.monotonic()
        if now - self._refreshed_at < self.REFRESH_EVERY_S:
            # Just re-read: maybe a rotation this replica has not seen yet. Ask again later
            # rather than call a genuine record tampered (or re-read the controls per record).
            raise KeyUnavailable("stored record names a key not known yet; retrying later")
        self._refreshed_at = now
        await self.refresh_known()  # the control records and the authority, read again
        if self._is_known(key_ref, control):
            return key_ref
        raise RecordTampered("stored record names a key this store has never used")

    def _is_known(self, key_ref: KeyRef, control: bool) -> bool:
        if key_ref in self._known:
            return True
        active = self.active
        return (
            control
            and active.kind is KeyKind.KMS
            and key_ref.account_region == (active.account_region)
        )

    def _context(self, item: Item) -> EncryptionContext:
        return EncryptionContext(
            table_name=self._table_name, partition_key_name=PARTITION_KEY, attributes=item
        )

    def _seal(self, item: Item) -> Item:
        try:
            materials, key_ref = self._keys.encryption_materials(self._context(item))
        except Exception as exc:
            if _aws_cause(exc) is None:
                raise  # not an AWS failure: a bug, which retrying won't fix
            raise _key_unavailable(exc, "sealing") from exc
        self.sealing_ref = key_ref
        sealed = {**item, KEY_REF: {"S": str(key_ref)}}
        config = CryptoConfig(
            materials_provider=_Sealed(materials),
            encryption_context=self._context(sealed),
            attribute_actions=ATTRIBUTE_ACTIONS,
        )
        result: Item = encrypt_dynamodb_item(sealed, config)
        return result

    def _open(self, item: Item, key_ref: KeyRef) -> Item:
        try:
            config = CryptoConfig(
                materials_provider=self._keys.decrypting_provider(key_ref),
                encryption_context=self._context(item),
                attribute_actions=ATTRIBUTE_ACTIONS,
            )
            # decrypt_dynamodb_item pops the signature attributes: hand it a copy.
            result: Item = decrypt_dynamodb_item(copy.deepcopy(item), config)
        except RecordTampered:
            raise
        except Exception as exc:
            aws = _aws_cause(exc)
            if aws is not None and error_code(aws) not in _TAMPER_CODES:
                raise _key_unavailable(aws, "opening") from exc
            raise RecordTampered(
                "stored record failed signature verification or decryption"
            ) from exc
        return result


def _aws_cause(exc: BaseException) -> BaseException | None:
    """The botocore error behind an SDK error, if any (the SDK re-raises inside `except`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError | BotoCoreError):
            found: BaseException = seen
            return found
        seen = seen.__cause__ or seen.__context__
    return None


def _key_unavailable(exc: BaseException, doing: str) -> KeyUnavailable:
    code = error_code(_aws_cause(exc) or exc)
    return KeyUnavailable(f"key service unavailable while {doing} a record ({code})")
