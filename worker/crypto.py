"""Item encryption and signing with dynamodb-encryption-sdk, and which key seals a record.

The SDK is synchronous and, with a KMS-backed provider, does network I/O inside every call, so
both directions run on a bounded thread pool, never on the event loop.

Two key modes (settings.KeyMode):
- `kms`: AwsKmsCryptographicMaterialsProvider. A fresh data key per record write, wrapped under
  the KMS key with the table name and user id in the KMS encryption context.
- `cached`: CachingMostRecentProvider over a MetaStore table. Material versions are wrapped under
  the KMS key once; records are sealed under the most recent version with no KMS call.

Every sealed item carries a signed-only `key_ref` naming the key ARN or material version, taken
from the very materials that sealed it, so rotation can find stale records without decrypting.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from dynamodb_encryption_sdk.encrypted import CryptoConfig
from dynamodb_encryption_sdk.encrypted.item import decrypt_dynamodb_item, encrypt_dynamodb_item
from dynamodb_encryption_sdk.identifiers import CryptoAction
from dynamodb_encryption_sdk.material_providers import CryptographicMaterialsProvider
from dynamodb_encryption_sdk.material_providers.aws_kms import AwsKmsCryptographicMaterialsProvider
from dynamodb_encryption_sdk.material_providers.most_recent import CachingMostRecentProvider
from dynamodb_encryption_sdk.material_providers.store.meta import MetaStore
from dynamodb_encryption_sdk.structures import AttributeActions, EncryptionContext

from .errors import KeyUnavailable, RecordTampered
from .record import KEY_REF, PARTITION_KEY, SIGN_ONLY, Item

# The SDK logs a full traceback (at ERROR) for every KMS refusal before raising; we translate
# and log those errors ourselves, once, without the noise.
logging.getLogger("dynamodb_encryption_sdk").setLevel(logging.CRITICAL)

META_ID = "amzn-ddb-meta-id"
KMS_REF_PREFIX = "kms:"
MATERIALS_REF_PREFIX = "materials:"
# KMS answers that mean "this ciphertext is not what it claims to be", as opposed to "try later".
_TAMPER_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})

ATTRIBUTE_ACTIONS = AttributeActions(
    default_action=CryptoAction.ENCRYPT_AND_SIGN,
    attribute_actions={name: CryptoAction.SIGN_ONLY for name in SIGN_ONLY},
)


class KeySource(Protocol):
    """Where sealing materials come from: the active key, and a provider that opens any record."""

    def encryption_materials(self, context: EncryptionContext) -> tuple[Any, str]:
        """Materials for one record, and the key_ref naming what they are wrapped under."""
        ...

    @property
    def decrypting_provider(self) -> Any: ...

    def active_ref(self) -> str:
        """The key_ref new records should carry, per the key authority (KMS alias, meta store)."""
        ...

    def activate(self, key_ref: str) -> None:
        """Seal new records under `key_ref` from now on (already checked against the authority)."""
        ...


@dataclass
class KmsKeys:
    """`kms` mode: a fresh data key per record under `key_arn`."""

    key_arn: str
    kms_client: Any  # a boto3 KMS client; the SDK calls it from the thread pool

    def __post_init__(self) -> None:
        self._provider = self._provider_for(self.key_arn)

    def _provider_for(self, key_arn: str) -> Any:
        region = key_arn.split(":")[3]
        return AwsKmsCryptographicMaterialsProvider(
            key_id=key_arn, regional_clients={region: self.kms_client}
        )

    def encryption_materials(self, context: EncryptionContext) -> tuple[Any, str]:
        return self._provider.encryption_materials(context), KMS_REF_PREFIX + self.key_arn

    @property
    def decrypting_provider(self) -> Any:
        # KMS Decrypt finds the key from the ciphertext: one provider opens records of any key.
        return self._provider

    def active_ref(self) -> str:
        return KMS_REF_PREFIX + self.key_arn

    def activate(self, key_ref: str) -> None:
        arn = key_ref.removeprefix(KMS_REF_PREFIX)
        # One reference swap: threads sealing right now finish with the old provider.
        self._provider, self.key_arn = self._provider_for(arn), arn


@dataclass
class CachedKeys:
    """`cached` mode: material versions kept in a meta-store table, cached in memory."""

    meta_store: MetaStore
    material_name: str
    version_ttl_s: float

    def __post_init__(self) -> None:
        self._provider = CachingMostRecentProvider(
            provider_store=self.meta_store,
            material_name=self.material_name,
            version_ttl=float(self.version_ttl_s),
        )

    def encryption_materials(self, context: EncryptionContext) -> tuple[Any, str]:
        materials = self._provider.encryption_materials(context)
        return materials, MATERIALS_REF_PREFIX + materials.material_description[META_ID]

    @property
    def decrypting_provider(self) -> Any:
        return self._provider

    def active_ref(self) -> str:
        version = self.meta_store.max_version(self.material_name)
        return f"{MATERIALS_REF_PREFIX}{self.material_name}#{version}"

    def activate(self, key_ref: str) -> None:
        # The provider re-reads the newest version on its next use.
        self._provider.refresh()


class _Sealed(CryptographicMaterialsProvider):  # type: ignore[misc]
    """Hands the SDK materials we already fetched, so key_ref can name them inside the signature."""

    def __init__(self, materials: Any) -> None:
        self._materials = materials

    def encryption_materials(self, encryption_context: EncryptionContext) -> Any:
        return self._materials


class ItemCipher:
    """Seals (encrypts and signs) and opens (verifies and decrypts) items off the event loop."""

    def __init__(self, keys: KeySource, table_name: str, executor: Executor) -> None:
        self._keys = keys
        self._table_name = table_name
        self._executor = executor
        # The key_ref of the last record sealed: what this replica writes under right now.
        self.sealing_ref: str | None = None

    @property
    def keys(self) -> KeySource:
        return self._keys

    async def seal(self, item: Item) -> Item:
        return await self._run(self._seal, item)

    async def open(self, item: Item) -> Item:
        """The decrypted item; raises RecordTampered if it fails verification."""
        return await self._run(self._open, item)

    async def active_ref(self) -> str:
        """Asks the authority (cached mode: the meta store), so it may raise KeyUnavailable."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._keys.active_ref)
        except Exception as exc:
            if _aws_cause(exc) is None:
                raise
            raise _key_unavailable(exc, "reading the active key of") from exc

    async def activate(self, key_ref: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._keys.activate, key_ref)

    async def _run(self, fn: Callable[[Item], Item], item: Item) -> Item:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, item)

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
        sealed = {**item, KEY_REF: {"S": key_ref}}
        config = CryptoConfig(
            materials_provider=_Sealed(materials),
            encryption_context=self._context(sealed),
            attribute_actions=ATTRIBUTE_ACTIONS,
        )
        result: Item = encrypt_dynamodb_item(sealed, config)
        return result

    def _open(self, item: Item) -> Item:
        config = CryptoConfig(
            materials_provider=self._keys.decrypting_provider,
            encryption_context=self._context(item),
            attribute_actions=ATTRIBUTE_ACTIONS,
        )
        try:
            # decrypt_dynamodb_item pops the signature attributes: hand it a copy.
            result: Item = decrypt_dynamodb_item(copy.deepcopy(item), config)
        except Exception as exc:
            aws = _aws_cause(exc)
            if aws is not None and _error_code(aws) not in _TAMPER_CODES:
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


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def _key_unavailable(exc: BaseException, doing: str) -> KeyUnavailable:
    code = _error_code(_aws_cause(exc) or exc)
    return KeyUnavailable(f"key service unavailable while {doing} a record ({code})")
