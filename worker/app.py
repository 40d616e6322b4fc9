"""Composition root: owns every client's lifetime and builds every component, once.

`components` is the only place adapters, the cipher, the handler, the index keys, the control
records and the follower are made. What it yields is handed to the entry points (the runner,
the commands, the Lambda runtime); the domain modules never import this one: each states the
few parts it needs as a small Protocol (`worker.sweep.SweepContext`,
`worker.rotation.RotationContext`, ...), which the object built here satisfies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
from aiobotocore.session import get_session

from userstore.events.sealing import PayloadSealer

from .adapters.kms import KeyService, sdk_config
from .adapters.queue import open_queue
from .adapters.queue import queue_url as adapter_queue_url
from .adapters.state_table import StateTable
from .adapters.users_table import UsersTable
from .authority import authority_ref
from .aws import client_config
from .blind_index import EmailIndex, IndexKeys
from .control import ControlRecords
from .crypto import ItemCipher
from .dead_letters import DeadLetterSender
from .errors import UserstoreError
from .follow import Follower, follow_control
from .handlers import HandlerLimits, UserEventHandler
from .logs import get_logger
from .message_reader import LazyOpener, MessageReader
from .metrics import Metrics
from .queue_depth import settled_depth
from .rotation import ensure_controls
from .settings import KeyMode, Settings
from .sqs import ConsumerConfig, SqsConsumer

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
    """Everything `components` built. Only entry points hold it; see the module docstring."""

    settings: Settings
    clients: Clients  # for consumer_for and the stream reader until they take ports of their own
    store: UsersTable
    state_table: StateTable
    cipher: ItemCipher
    handler: UserEventHandler
    index: IndexKeys
    reader: MessageReader
    keys: KeyService
    controls: ControlRecords
    follower: Follower
    payload_opener: LazyOpener

    @property
    def streams_client(self) -> Any:
        return self.clients.streams

    @property
    def dynamodb_client(self) -> Any:
        return self.clients.dynamodb

    async def queued_messages(self) -> int:
        """Messages in the queue and its dead-letter queue: the most of a few readings, since
        one reading of SQS's approximate counts can miss a message (worker.queue_depth)."""
        attempts = self.settings.aws_max_attempts
        queues = [
            await open_queue(self.clients.sqs, name, attempts)
            for name in (self.settings.queue, self.settings.dlq)
        ]

        async def total() -> int:
            return sum([await queue.depth() for queue in queues])

        return await settled_depth(total)


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


async def payload_sealer(settings: Settings) -> PayloadSealer:
    """A publisher-side sealer for the payload key (blocking setup runs off the loop)."""

    def build() -> PayloadSealer:
        kms = boto3.session.Session(region_name=settings.aws_region).client(
            "kms", endpoint_url=settings.aws_endpoint_url, config=sdk_config(settings)
        )
        described = kms.describe_key(KeyId=settings.payload_kms_key)
        return PayloadSealer(
            kms, str(described["KeyMetadata"]["Arn"]), max_age_s=settings.payload_key_cache_s
        )

    return await asyncio.get_running_loop().run_in_executor(None, build)


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
        keys = KeyService(settings, clients.kms, metrics)
        active_kms = await keys.active_kms_key()
        loop = asyncio.get_running_loop()
        source = await loop.run_in_executor(executor, keys.build_keys, active_kms)
        active = active_kms
        if settings.key_mode is KeyMode.CACHED:
            active = await loop.run_in_executor(executor, source.active_ref)
        cipher = ItemCipher(source, settings.table, executor, active)
        cipher.learn([active_kms])  # the alias's key: the authority vouches for it
        store = UsersTable(clients.dynamodb, settings.table, max_attempts=settings.aws_max_attempts)
        limits = HandlerLimits(
            tombstone_ttl=timedelta(seconds=settings.tombstone_ttl_s),
            max_clock_skew=timedelta(seconds=settings.max_clock_skew_s),
            max_conflict_retries=settings.max_conflict_retries,
        )
        index = IndexKeys(EmailIndex({0: bytes(32)}, 0))  # replaced below, from the controls
        opener = LazyOpener(settings, keys)
        parts = Components(
            settings,
            clients,
            store,
            StateTable(
                clients.dynamodb, settings.state_table, max_attempts=settings.aws_max_attempts
            ),
            cipher,
            UserEventHandler(store, cipher, index, limits),
            index,
            MessageReader(opener, executor),
            keys,
            ControlRecords(store, cipher),
            Follower(),
            opener,
        )
        await ensure_controls(parts)
        await follow_control(parts)  # learns the key history, unwraps the index keys

        async def refresh() -> None:
            # The authority first: a replica may already seal under the alias's new key before
            # the control record announcing it is written.
            try:
                cipher.learn([await authority_ref(parts)])
                if settings.key_mode is KeyMode.CACHED:
                    cipher.learn([await keys.active_kms_key()])
                await follow_control(parts)
            except UserstoreError as exc:
                log.warning("control.follow_failed", error=type(exc).__name__, reason=exc.reason)

        cipher.refresh_known = refresh
        yield parts


async def queue_url(sqs: Any, name_or_url: str, settings: Settings) -> str:
    return await adapter_queue_url(sqs, name_or_url, settings.aws_max_attempts)


async def consumer_for(parts: Components, metrics: Metrics) -> SqsConsumer:
    settings = parts.settings
    attempts = settings.aws_max_attempts
    queue = await open_queue(parts.clients.sqs, settings.queue, attempts)
    dead_letters = await open_queue(parts.clients.sqs, settings.dlq, attempts)
    config = ConsumerConfig(
        queue_url=queue.url,
        dlq_url=dead_letters.url,
        max_in_flight=settings.max_in_flight,
        wait_time_s=settings.wait_time_s,
        visibility_timeout_s=settings.visibility_timeout_s,
        max_receive_count=settings.max_receive_count,
        drain_timeout_s=settings.drain_timeout_s,
    )
    sender = DeadLetterSender(dead_letters, metrics)
    return SqsConsumer(queue, sender, config, parts.handler, metrics, parts.reader)
