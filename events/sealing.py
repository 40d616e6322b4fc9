"""Sealed payloads: ``data`` encrypted for the worker with aws-encryption-sdk under a KMS key.

The contract (publisher and worker):

- Plaintext: the compact JSON of the event's ``data`` (``envelopes.sealed_plaintext``).
- Ciphertext: an aws-encryption-sdk message (default committing, signing suite), base64 in the
  envelope's ``sealed`` field, which replaces ``data``. ``event_id``, ``user_id``, ``type`` and
  ``occurred_at`` stay in the clear: the worker orders and deduplicates on them.
- Encryption context: ``userstore:purpose=user-event-data/v1`` plus ``event_id``, ``user_id``,
  ``type`` and ``occurred_at`` (``canonical_occurred_at``: UTC, fixed width, microseconds, e.g.
  ``2026-11-28T10:00:00.000000Z``). The message header authenticates all of it; the worker
  refuses a payload whose context does not name the envelope it arrived in (a payload moved to
  another event or user, or re-dated so that it wins or loses against other changes).
- Payloads sealed under the 0.4 contract have no ``occurred_at`` in their context. They are
  refused (dead-letter, ``_UNDATED`` says what to do): accepting them would keep re-dating open
  to anyone who can send to the queue or redrive its dead-letter queue. Their publisher must seal
  and publish them again (redriving them does not help).
- Keys: one KMS key (``USERSTORE_PAYLOAD_KMS_KEY``). Publishers need kms:GenerateDataKey on it,
  the worker kms:Decrypt only; so a dead-letter queue, which keeps bodies as they arrived,
  holds no readable personal data.
- Data-key caching: the aws-encryption-sdk caches materials per encryption context, which here
  differs per event, so ``_PerEventContext`` asks the cache with the fixed purpose only and
  writes the per-event entries into the header itself. KMS binds the data key to the purpose;
  the header's authentication tag (under that data key) and the signature bind the message to
  its event. One GenerateDataKey serves up to ``max_messages`` events or ``max_age_s`` seconds;
  the worker's decrypt cache reuses the unwrapped key just as long. Such messages carry
  ``userstore:data-key-scope=purpose``; without it (another language's SDK sealing the plain
  way) the whole context is given to KMS, and the message opens just the same.

Both classes are synchronous and call KMS: async callers run them on a thread pool.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import attr
import aws_encryption_sdk
from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
from aws_encryption_sdk.identifiers import CommitmentPolicy
from aws_encryption_sdk.key_providers.kms import KMSMasterKey
from aws_encryption_sdk.materials_managers import (
    DecryptionMaterialsRequest,
    EncryptionMaterialsRequest,
)
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidSignature, InvalidTag

from .envelopes import open_sealed, sealed_plaintext
from .errors import EventError, InvalidEvent
from .models import Event, SealedEvent

__all__ = [
    "PURPOSE",
    "PURPOSE_KEY",
    "PayloadOpener",
    "PayloadSealer",
    "Sealer",
    "SealingUnavailable",
    "canonical_occurred_at",
    "encryption_context",
]

PURPOSE_KEY: Final = "userstore:purpose"
PURPOSE: Final = "user-event-data/v1"
_OCCURRED_AT: Final = "occurred_at"
_BOUND_KEYS: Final = ("event_id", "user_id", "type", _OCCURRED_AT)
# The SDK's own entry (the signing suite's public key), part of what KMS and the cache see.
_PUBLIC_KEY: Final = "aws-crypto-public-key"
# Ours: the data key is bound (in KMS) to the purpose only, not to the event.
_SCOPE_KEY: Final = "userstore:data-key-scope"
_SCOPE_PURPOSE: Final = "purpose"
# KMS answers meaning "this ciphertext is not for you / not genuine", as opposed to "try later".
_CONTEXT_MISMATCH: Final = (
    "sealed: encryption context does not match this event's event_id, user_id, type and occurred_at"
)
_UNDATED: Final = (
    "sealed: encryption context has no occurred_at (the 0.4 contract):"
    " the publisher must seal and publish the event again with a current version"
)
_REFUSED_CODES: Final = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


class SealingUnavailable(EventError):
    """KMS could not be reached or refused for a reason that may pass: try again later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sealer(Protocol):
    """What the publisher needs: seal one validated event (synchronous; may call KMS)."""

    def seal(self, event: Event) -> SealedEvent: ...


def canonical_occurred_at(occurred_at: datetime) -> str:
    """The one spelling of a time in the context: UTC, microseconds, fixed width (year 0001 too).

    Equal instants give equal strings whatever offset or precision the envelope was written
    with; for years from 1000 it is the time part of ``worker.profile.stamp_of``.
    """
    utc = occurred_at.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S.%f}Z"


def encryption_context(
    event_id: str, user_id: str, event_type: str, occurred_at: datetime
) -> dict[str, str]:
    return {
        PURPOSE_KEY: PURPOSE,
        "event_id": event_id,
        "user_id": user_id,
        "type": event_type,
        _OCCURRED_AT: canonical_occurred_at(occurred_at),
    }


class _PerEventContext(CryptoMaterialsManager):  # type: ignore[misc]
    """Materials cached per purpose, while each message's header carries its event's context.

    The header also says so (``_SCOPE_KEY``), so that messages from publishers that seal the
    plain way (the whole context given to KMS, as any other aws-encryption-sdk does) open too.
    """

    def __init__(self, cache: CachingCryptoMaterialsManager) -> None:
        self._cache = cache

    def get_encryption_materials(self, request: EncryptionMaterialsRequest) -> Any:
        full = {**request.encryption_context, _SCOPE_KEY: _SCOPE_PURPOSE}
        shared = {k: v for k, v in full.items() if k not in _BOUND_KEYS}
        materials = self._cache.get_encryption_materials(
            attr.evolve(request, encryption_context=shared)
        )
        return attr.evolve(materials, encryption_context={**materials.encryption_context, **full})

    def decrypt_materials(self, request: DecryptionMaterialsRequest) -> Any:
        context = request.encryption_context
        if context.get(_SCOPE_KEY) == _SCOPE_PURPOSE:
            context = {k: v for k, v in context.items() if k not in _BOUND_KEYS}
        return self._cache.decrypt_materials(attr.evolve(request, encryption_context=context))


class _MasterKey(KMSMasterKey):  # type: ignore[misc]
    """Lets a KMS outage through as such: the SDK would fold it into "no key could decrypt"."""

    def _decrypt_data_key(
        self, encrypted_data_key: Any, algorithm: Any, encryption_context: Any = None
    ) -> Any:
        try:
            return super()._decrypt_data_key(encrypted_data_key, algorithm, encryption_context)
        except AWSEncryptionSDKClientError as exc:
            cause = exc.__context__
            if isinstance(cause, ClientError):
                code = str(cause.response.get("Error", {}).get("Code", ""))
                if code not in _REFUSED_CODES:
                    raise SealingUnavailable(f"key service refused to decrypt ({code})") from None
            raise


def _materials(kms_client: Any, key_arn: str, max_age_s: float, max_messages: int) -> Any:
    cache = CachingCryptoMaterialsManager(
        master_key_provider=_MasterKey(key_id=key_arn, client=kms_client),
        cache=LocalCryptoMaterialsCache(capacity=100),
        max_age=max_age_s,
        max_messages_encrypted=max_messages,
    )
    return _PerEventContext(cache)


_CLIENT: Final = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
)


class PayloadSealer:
    """Publisher side: seal an event's data. Thread-safe (the SDK cache locks itself)."""

    def __init__(
        self,
        kms_client: Any,
        key_arn: str,
        *,
        max_age_s: float = 300.0,
        max_messages: int = 1000,
    ) -> None:
        """``kms_client`` is a boto3 KMS client; ``key_arn`` the full key ARN (not an alias)."""
        self._materials = _materials(kms_client, key_arn, max_age_s, max_messages)

    def seal(self, event: Event) -> SealedEvent:
        context = encryption_context(
            event.event_id, event.user_id, event.type.value, event.occurred_at
        )
        try:
            ciphertext, _header = _CLIENT.encrypt(
                source=sealed_plaintext(event),
                encryption_context=context,
                materials_manager=self._materials,
            )
        except (BotoCoreError, AWSEncryptionSDKClientError) as exc:
            raise SealingUnavailable(f"cannot seal ({type(exc).__name__})") from None
        fields = event.model_dump(mode="json", exclude={"data"}, exclude_none=True)
        return SealedEvent.model_validate(
            {**fields, "sealed": base64.b64encode(ciphertext).decode("ascii")}
        )


class PayloadOpener:
    """Worker side: open sealed envelopes under one KMS key, with a decrypt-side cache.

    Raises InvalidEvent (dead-letter: tampered, truncated, another key, moved to another event or
    time, sealed under the 0.4 contract without occurred_at) or SealingUnavailable (retry: KMS
    unreachable or throttling).
    """

    def __init__(self, kms_client: Any, key_arn: str, *, max_age_s: float = 300.0) -> None:
        self._materials = _materials(kms_client, key_arn, max_age_s, 1)

    def open(self, envelope: SealedEvent) -> Event:
        event_type = envelope.type.value
        expected = encryption_context(
            envelope.event_id, envelope.user_id, event_type, envelope.occurred_at
        )
        ids = {"event_id": envelope.event_id, "event_type": event_type}
        reason = ""
        plaintext = b""
        try:
            ciphertext = base64.b64decode(envelope.sealed, validate=True)
            plaintext, header = _CLIENT.decrypt(
                source=ciphertext, materials_manager=self._materials
            )
            context = {
                k: v
                for k, v in header.encryption_context.items()
                if k not in (_PUBLIC_KEY, _SCOPE_KEY)
            }
            if context != expected:
                undated = _OCCURRED_AT not in context and context == {
                    k: v for k, v in expected.items() if k != _OCCURRED_AT
                }
                reason = _UNDATED if undated else _CONTEXT_MISMATCH
                plaintext = b""
        except SealingUnavailable:
            raise
        except BotoCoreError as exc:
            raise SealingUnavailable(f"key service unreachable ({type(exc).__name__})") from None
        except (
            AWSEncryptionSDKClientError,
            InvalidSignature,
            InvalidTag,
            binascii.Error,
            ValueError,
            EOFError,
        ):
            # The SDK's messages are about structure and keys, but may hold ciphertext bytes.
            reason = "sealed: cannot be opened (not sealed for this worker's key, or altered)"
        if reason:
            raise InvalidEvent(reason, **ids)
        return open_sealed(envelope, plaintext)
