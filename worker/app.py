"""Composition root: owns every client's lifetime and wires the components together."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
from aiobotocore.session import get_session
from botocore.config import Config
from dynamodb_encryption_sdk.material_providers.aws_kms import (
    AwsKmsCryptographicMaterialsProvider,
)
from dynamodb_encryption_sdk.material_providers.store.meta import MetaStore

from events.sealing import PayloadSealer

from .aws import call, client_config
from .blind_index import EmailIndex, IndexKeys, kms_context
from .control import ACTIVE_KEY, INDEX_KEYS, read_control, write_control
from .crypto import CachedKeys, ItemCipher, KeySource, KmsKeys
from .handlers import HandlerLimits, UserEventHandler
from .intake import LazyOpener, MessageReader
from .logs import get_logger
from .metrics import SDK_CALLER, Metrics
from .settings import KeyMode, Settings
from .sqs import ConsumerConfig, SqsConsumer
from .store import RecordStore

log = get_logger("userstore.app")


@dataclass
class Clients:
    """aiobotocore clients for the async paths."""

    sqs: Any
    dynamodb: Any
    kms: Any
    streams: Any


@dataclass
class Components:
    settings: Settings
    clients: Clients
    store: RecordStore
    cipher: ItemCipher
    handler: UserEventHandler
    key_arn: str
    index: IndexKeys
    reader: MessageReader


@asynccontextmanager
async def aws_clients(settings: Settings, metrics: Metrics | None = None) -> AsyncIterator[Clients]:
    session = get_session()
    config = client_config(
        max_pool_connections=max(10, settings.max_in_flight),
        connect_timeout_s=settings.aws_connect_timeout_s,
        read_timeout_s=settings.aws_read_timeout_s,
    )
    kwargs: dict[str, Any] = {"region_name": settings.aws_region, "config": config}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    async with AsyncExitStack() as stack:
        clients = Clients(
            sqs=await stack.enter_async_context(session.create_client("sqs", **kwargs)),
            dynamodb=await stack.enter_async_context(session.create_client("dynamodb", **kwargs)),
            kms=await stack.enter_async_context(session.create_client("kms", **kwargs)),
            streams=await stack.enter_async_context(
                session.create_client("dynamodbstreams", **kwargs)
            ),
        )
        if metrics is not None:
            for client in (clients.sqs, clients.dynamodb, clients.kms, clients.streams):
                metrics.instrument(client)
        yield clients


def _sync_config(settings: Settings) -> Config:
    """For the encryption SDK's boto3 clients, which only run on the crypto thread pool."""
    return Config(
        retries={"mode": "standard", "max_attempts": settings.aws_max_attempts},
        max_pool_connections=settings.crypto_threads,
        connect_timeout=settings.aws_connect_timeout_s,
        read_timeout=settings.aws_read_timeout_s,
    )


async def payload_sealer(settings: Settings) -> PayloadSealer:
    """A publisher-side sealer for the payload key (blocking setup runs off the loop)."""

    def build() -> PayloadSealer:
        kms = boto3.session.Session(region_name=settings.aws_region).client(
            "kms", endpoint_url=settings.aws_endpoint_url, config=_sync_config(settings)
        )
        described = kms.describe_key(KeyId=settings.payload_kms_key)
        return PayloadSealer(
            kms, str(described["KeyMetadata"]["Arn"]), max_age_s=settings.payload_key_cache_s
        )

    return await asyncio.get_running_loop().run_in_executor(None, build)


async def resolve_key_arn(kms: Any, settings: Settings) -> str:
    described = await call(
        "DescribeKey",
        kms.describe_key,
        max_attempts=settings.aws_max_attempts,
        KeyId=settings.kms_key,
    )
    return str(described["KeyMetadata"]["Arn"])


def build_keys(settings: Settings, key_arn: str, metrics: Metrics | None = None) -> KeySource:
    """Blocking (client construction, and MetaStore calls DescribeTable): run it off the loop.

    The encryption SDK calls KMS (and in `cached` mode DynamoDB) with these boto3 clients, not
    the worker's: `metrics` counts their requests too.
    """
    session = boto3.session.Session(region_name=settings.aws_region)
    config = _sync_config(settings)
    kms = session.client("kms", endpoint_url=settings.aws_endpoint_url, config=config)
    if metrics is not None:
        metrics.instrument(kms, SDK_CALLER)
    if settings.key_mode is KeyMode.KMS:
        return KmsKeys(key_arn=key_arn, kms_client=kms)
    region = key_arn.split(":")[3]
    resource = session.resource("dynamodb", endpoint_url=settings.aws_endpoint_url, config=config)
    if metrics is not None:
        metrics.instrument(resource.meta.client, SDK_CALLER)
    meta_store = MetaStore(
        table=resource.Table(settings.meta_table),
        materials_provider=AwsKmsCryptographicMaterialsProvider(
            key_id=key_arn, regional_clients={region: kms}
        ),
    )
    return CachedKeys(meta_store, settings.material_name, settings.material_ttl_s)


@asynccontextmanager
async def components(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Components]:
    """Every component, built and checked; `metrics`, if given, counts each AWS request."""
    async with AsyncExitStack() as stack:
        clients = await stack.enter_async_context(aws_clients(settings, metrics))
        executor = ThreadPoolExecutor(
            max_workers=settings.crypto_threads, thread_name_prefix="userstore-crypto"
        )
        stack.callback(executor.shutdown, wait=True, cancel_futures=True)
        key_arn = await resolve_key_arn(clients.kms, settings)
        keys = await asyncio.get_running_loop().run_in_executor(
            executor, build_keys, settings, key_arn, metrics
        )
        cipher = ItemCipher(keys, settings.table, executor)
        store = RecordStore(
            clients.dynamodb, settings.table, max_attempts=settings.aws_max_attempts
        )
        limits = HandlerLimits(
            tombstone_ttl=timedelta(seconds=settings.tombstone_ttl_s),
            max_clock_skew=timedelta(seconds=settings.max_clock_skew_s),
            max_conflict_retries=settings.max_conflict_retries,
        )
        index = IndexKeys(await ensure_controls(settings, clients.kms, store, cipher))
        handler = UserEventHandler(store, cipher, index, limits)
        reader = MessageReader(LazyOpener(settings), executor)
        yield Components(settings, clients, store, cipher, handler, key_arn, index, reader)


async def ensure_controls(
    settings: Settings, kms: Any, store: RecordStore, cipher: ItemCipher
) -> EmailIndex:
    """Create the control records if this table has none yet; return the blind index in force.

    Both creations are conditional writes, so replicas starting together agree on one result.
    """
    control = await read_control(store, cipher, INDEX_KEYS)
    if control is None:
        body = {"active": 1, "versions": {"1": await new_index_key(settings, kms, 1)}}
        await write_control(store, cipher, INDEX_KEYS, body, expected_rev=None)
        control = await read_control(store, cipher, INDEX_KEYS)
        assert control is not None
    if await read_control(store, cipher, ACTIVE_KEY) is None:
        active = await cipher.active_ref()
        body = {"active_key_ref": active, "history": [active]}
        await write_control(store, cipher, ACTIVE_KEY, body, expected_rev=None)
    return await load_index(settings, kms, control.body)


async def new_index_key(settings: Settings, kms: Any, version: int) -> str:
    """A fresh 256-bit index key, returned only as KMS ciphertext (base64)."""
    response = await call(
        "GenerateDataKey",
        kms.generate_data_key,
        max_attempts=settings.aws_max_attempts,
        KeyId=settings.kms_key,
        NumberOfBytes=32,
        EncryptionContext=kms_context(settings.table, version),
    )
    return base64.b64encode(response["CiphertextBlob"]).decode()


async def load_index(settings: Settings, kms: Any, body: dict[str, Any]) -> EmailIndex:
    keys: dict[int, bytes] = {}
    for version, wrapped in body["versions"].items():
        response = await call(
            "Decrypt",
            kms.decrypt,
            max_attempts=settings.aws_max_attempts,
            CiphertextBlob=base64.b64decode(wrapped),
            EncryptionContext=kms_context(settings.table, int(version)),
        )
        keys[int(version)] = response["Plaintext"]
    return EmailIndex(keys, int(body["active"]))


async def queue_url(sqs: Any, name_or_url: str, settings: Settings) -> str:
    if name_or_url.startswith(("http://", "https://")):
        return name_or_url
    response = await call(
        "GetQueueUrl",
        sqs.get_queue_url,
        max_attempts=settings.aws_max_attempts,
        QueueName=name_or_url,
    )
    return str(response["QueueUrl"])


async def consumer_for(parts: Components, metrics: Metrics) -> SqsConsumer:
    settings = parts.settings
    config = ConsumerConfig(
        queue_url=await queue_url(parts.clients.sqs, settings.queue, settings),
        dlq_url=await queue_url(parts.clients.sqs, settings.dlq, settings),
        max_in_flight=settings.max_in_flight,
        wait_time_s=settings.wait_time_s,
        visibility_timeout_s=settings.visibility_timeout_s,
        max_receive_count=settings.max_receive_count,
        drain_timeout_s=settings.drain_timeout_s,
        max_attempts=settings.aws_max_attempts,
    )
    return SqsConsumer(parts.clients.sqs, config, parts.handler, metrics, parts.reader)
