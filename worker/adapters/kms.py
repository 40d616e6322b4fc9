"""The key service: the one adapter through which userstore calls KMS and the meta store
(implements ports.KeyService for the domain; builds the encryption SDKs' key sources).

- KMS on the event loop (aiobotocore): key and alias resolution, the blind-index keys (generate,
  unwrap under the key that wrapped them, re-wrap with ReEncrypt so the plaintext never enters the
  process), pointing an alias at a new key.
- The encryption SDKs' own KMS calls (dynamodb-encryption-sdk's providers, the meta store of
  `cached` mode, aws-encryption-sdk for sealed payloads) go through the synchronous boto3 client
  built here, on the crypto thread pool.

KMS answers are translated once, here: a key that is missing is KeyNotFound (configuration), a
key that is disabled, pending deletion or not ours to use is KeyUnavailable (retry later), and a
ciphertext that is not under the key it claims is RecordTampered.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from dynamodb_encryption_sdk.material_providers.aws_kms import (
    AwsKmsCryptographicMaterialsProvider,
)
from dynamodb_encryption_sdk.material_providers.store.meta import MetaStore

from userstore.events.sealing import SealingUnavailable

from ..aws import Refused, call, error_code
from ..blind_index import kms_context
from ..crypto import CachedKeys, KeySource, KmsKeys
from ..errors import KeyNotFound, KeyUnavailable, RecordTampered
from ..index_keys import WrappedKey
from ..keyref import KeyRef
from ..logs import get_logger
from ..metrics import SDK_CALLER, Metrics
from ..settings import KeyMode, Settings

log = get_logger("userstore.keys")

_TAMPERED = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
# What an emulator without the operation answers (AWS has ReEncrypt).
_NO_SUCH_OPERATION = frozenset({"InvalidAction", "UnknownOperationException"})
_UNUSABLE = frozenset(
    {"DisabledException", "KMSInvalidStateException", "AccessDeniedException", "NotFoundException"}
)


def sdk_config(settings: Settings) -> Config:
    """For the encryption SDKs' boto3 clients, which only run on the crypto thread pool."""
    return Config(
        retries={"mode": "standard", "max_attempts": settings.aws_max_attempts},
        max_pool_connections=settings.crypto_threads,
        connect_timeout=settings.aws_connect_timeout_s,
        read_timeout=settings.aws_read_timeout_s,
    )


class KeyService:
    def __init__(self, settings: Settings, kms: Any, metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._kms = kms  # aiobotocore
        self._metrics = metrics
        self._session = boto3.session.Session(region_name=settings.aws_region)
        self._sdk_kms: Any = None

    # --- the synchronous side, for the encryption SDKs (call from the crypto pool) -----------

    def sdk_kms(self) -> Any:
        """The boto3 KMS client the encryption SDKs call (built once; blocking)."""
        if self._sdk_kms is None:
            s = self._settings
            client = self._session.client(
                "kms", endpoint_url=s.aws_endpoint_url, config=sdk_config(s)
            )
            if self._metrics is not None:
                self._metrics.instrument(client, SDK_CALLER)
            self._sdk_kms = client
        return self._sdk_kms

    def resolve_payload_key(self) -> str:
        """The payload key's ARN, for the sealed-payload opener (blocking)."""
        try:
            described = self.sdk_kms().describe_key(KeyId=self._settings.payload_kms_key)
        except (ClientError, BotoCoreError) as exc:
            raise SealingUnavailable(f"payload key not available ({error_code(exc)})") from None
        return str(described["KeyMetadata"]["Arn"])

    def build_keys(self, active: KeyRef) -> KeySource:
        """The sealing key source for the configured mode (blocking: builds clients, and the
        meta store calls DescribeTable). `active`: the KMS key the authority names."""
        s = self._settings
        if s.key_mode is KeyMode.KMS:
            return KmsKeys(active, self.sdk_kms())
        resource = self._session.resource(
            "dynamodb", endpoint_url=s.aws_endpoint_url, config=sdk_config(s)
        )
        if self._metrics is not None:
            self._metrics.instrument(resource.meta.client, SDK_CALLER)
        table = resource.Table(s.meta_table)

        def meta_store_for(wrapping: KeyRef) -> MetaStore:
            # Opening a version needs no KeyId: KMS finds the key that wrapped it, so versions
            # wrapped under an earlier key stay readable while that key is enabled.
            provider = AwsKmsCryptographicMaterialsProvider(
                key_id=wrapping.arn, regional_clients={wrapping.region: self.sdk_kms()}
            )
            return MetaStore(table=table, materials_provider=provider)

        return CachedKeys(meta_store_for, active, s.material_name, s.material_ttl_s)

    # --- KMS on the event loop ---------------------------------------------------------------

    async def _call(
        self, operation: str, fn: Any, expected: frozenset[str] = frozenset(), **kwargs: Any
    ) -> Any:
        try:
            return await call(
                operation,
                fn,
                max_attempts=self._settings.aws_max_attempts,
                expected=_TAMPERED | _UNUSABLE | expected,
                **kwargs,
            )
        except Refused as exc:
            code = exc.code
            if code in expected:
                raise
            if code in _TAMPERED:
                raise RecordTampered(
                    f"{operation}: ciphertext is not under its key ({code})"
                ) from None
            if code == "NotFoundException" and operation == "DescribeKey":
                raise KeyNotFound(
                    "no such KMS key or alias: check the key setting, or run `userstore provision`",
                    name=kwargs.get("KeyId"),
                ) from None
            raise KeyUnavailable(f"key service refused {operation} ({code})") from None

    async def resolve(self, key_id: str) -> KeyRef:
        """The key a key id, ARN or alias names; KeyUnavailable if it is not enabled."""
        described = await self._call("DescribeKey", self._kms.describe_key, KeyId=key_id)
        metadata = described["KeyMetadata"]
        state = metadata.get("KeyState", "Enabled")
        if state != "Enabled":
            raise KeyUnavailable(f"key {metadata['Arn']} is {state}, not Enabled")
        return KeyRef.kms(str(metadata["Arn"]))

    async def active_kms_key(self) -> KeyRef:
        """The KMS key the configured alias points to: the authority on the active key."""
        return await self.resolve(self._settings.kms_key)

    async def payload_key(self) -> KeyRef:
        return await self.resolve(self._settings.payload_kms_key)

    async def point_alias(self, alias: str, to: KeyRef) -> None:
        await self._call(
            "UpdateAlias",
            self._kms.update_alias,
            AliasName=alias,
            TargetKeyId=to.arn.rpartition("/")[2],
        )

    async def new_index_key(self, under: KeyRef, version: int) -> WrappedKey:
        """A fresh 256-bit blind-index key, returned only wrapped under `under`."""
        response = await self._call(
            "GenerateDataKey",
            self._kms.generate_data_key,
            KeyId=under.arn,
            NumberOfBytes=32,
            EncryptionContext=kms_context(self._settings.table, version),
        )
        return WrappedKey(response["CiphertextBlob"], under)

    async def unwrap_index_key(self, wrapped: WrappedKey, version: int) -> tuple[bytes, KeyRef]:
        """The plaintext index key, and the key that wrapped it (named in the call if known)."""
        named: dict[str, Any] = {} if wrapped.key is None else {"KeyId": wrapped.key.arn}
        response = await self._call(
            "Decrypt",
            self._kms.decrypt,
            CiphertextBlob=wrapped.blob,
            EncryptionContext=kms_context(self._settings.table, version),
            **named,
        )
        return response["Plaintext"], KeyRef.kms(str(response["KeyId"]))

    async def rewrap_index_key(self, wrapped: WrappedKey, version: int, to: KeyRef) -> WrappedKey:
        """The same index key wrapped under `to`; KMS re-encrypts it, it never reaches us."""
        context = kms_context(self._settings.table, version)
        named: dict[str, Any] = {} if wrapped.key is None else {"SourceKeyId": wrapped.key.arn}
        try:
            response = await self._call(
                "ReEncrypt",
                self._kms.re_encrypt,
                expected=_NO_SUCH_OPERATION,
                CiphertextBlob=wrapped.blob,
                SourceEncryptionContext=context,
                DestinationKeyId=to.arn,
                DestinationEncryptionContext=context,
                **named,
            )
        except Refused:
            # Only an emulator lacks ReEncrypt (ministack 1.5): unwrap and wrap again, which
            # puts the index key in this process's memory for a moment, as a worker holds it.
            log.warning("kms.reencrypt_unsupported", version=version)
            plain, _ = await self.unwrap_index_key(wrapped, version)
            response = await self._call(
                "Encrypt",
                self._kms.encrypt,
                KeyId=to.arn,
                Plaintext=plain,
                EncryptionContext=context,
            )
        return WrappedKey(response["CiphertextBlob"], to)
