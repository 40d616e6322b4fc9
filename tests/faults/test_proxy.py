"""The fault proxy against a moto server process: faithful pass-through with no faults, and each
fault kind reaching botocore (aiobotocore and boto3) as the failure the worker must classify.

Every client here has its own retries off, so a fault is seen exactly as injected.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from tests.faults.proxy import (
    DROP_AFTER,
    DROP_BEFORE,
    ERROR5XX,
    KMS_ACCESS_DENIED,
    KMS_DISABLED,
    KMS_INVALID_STATE,
    THROTTLE,
    TIMEOUT,
    FaultProxy,
    FaultRules,
    ProxyStats,
    ServiceRules,
    fault_proxy_process,
)
from tests.harness.counting import event
from tests.harness.emulator import free_port
from userstore.worker import profile
from userstore.worker.aws import TRANSIENT_CODES, call, is_transient
from userstore.worker.crypto import ItemCipher, KmsKeys
from userstore.worker.errors import KeyUnavailable
from userstore.worker.keyref import KeyRef
from userstore.worker.profile import UserState
from userstore.worker.record import to_item

REGION = "eu-west-2"
SHORT_READ_TIMEOUT_S = 0.3
HOLD_S = 1.0  # longer than SHORT_READ_TIMEOUT_S: the client gives up first

# What botocore 1.43 parses each injected error as (Error.Code).
THROTTLE_CODE = {
    "dynamodb": "ThrottlingException",
    "dynamodbstreams": "ThrottlingException",
    "kms": "ThrottlingException",
    "sqs": "RequestThrottled",  # from the x-amzn-query-error header
}
INTERNAL_CODE = {
    500: {
        "dynamodb": "InternalServerError",
        "dynamodbstreams": "InternalServerError",
        "kms": "KMSInternalException",
        "sqs": "InternalFailure",
    },
    503: dict.fromkeys(("dynamodb", "dynamodbstreams", "kms", "sqs"), "ServiceUnavailable"),
}
KMS_CODE = {
    KMS_ACCESS_DENIED: "AccessDeniedException",
    KMS_DISABLED: "DisabledException",
    KMS_INVALID_STATE: "KMSInvalidStateException",
}
SERVICES = ("dynamodb", "dynamodbstreams", "kms", "sqs")
TRANSPORT_KINDS = (DROP_BEFORE, DROP_AFTER, TIMEOUT)


def aio_config(read_timeout: float = 10.0) -> AioConfig:
    return AioConfig(
        retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=read_timeout
    )


def boto_config(read_timeout: float = 10.0) -> Config:
    return Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=2,
        read_timeout=read_timeout,
    )


@asynccontextmanager
async def aio_client(service: str, url: str, read_timeout: float = 10.0) -> AsyncIterator[Any]:
    async with get_session().create_client(
        service, endpoint_url=url, region_name=REGION, config=aio_config(read_timeout)
    ) as client:
        yield client


def boto_client(service: str, url: str, read_timeout: float = 10.0) -> Any:
    return boto3.session.Session(region_name=REGION).client(
        service, endpoint_url=url, config=boto_config(read_timeout)
    )


# One cheap call per service, and its operation name.
PROBES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "dynamodb": ("ListTables", lambda c: c.list_tables(Limit=1)),
    "dynamodbstreams": ("ListStreams", lambda c: c.list_streams(Limit=1)),
    "kms": ("ListKeys", lambda c: c.list_keys(Limit=1)),
    "sqs": ("ListQueues", lambda c: c.list_queues(MaxResults=1)),
}


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(moto_endpoint, FaultRules(seed=7, timeout_hold_s=HOLD_S))
    async with proxy:
        yield proxy


def outage(kind: str, service: str, **options: Any) -> FaultRules:
    return FaultRules(seed=7, timeout_hold_s=HOLD_S, **options).with_outage(service, kind)


def tag() -> str:
    return uuid.uuid4().hex[:10]


# --- pass-through -------------------------------------------------------------------------------


async def test_pass_through_with_aiobotocore(proxy: FaultProxy, moto_endpoint: str) -> None:
    name = tag()
    async with (
        aio_client("dynamodb", proxy.url) as ddb,
        aio_client("sqs", proxy.url) as sqs,
        aio_client("kms", proxy.url) as kms,
        aio_client("dynamodbstreams", proxy.url) as streams,
        aio_client("dynamodb", moto_endpoint) as direct,
    ):
        await ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        item = {"pk": {"S": "k1"}, "blob": {"B": bytes(range(256))}, "n": {"N": "42"}}
        await ddb.put_item(TableName=name, Item=item)
        got = await ddb.get_item(TableName=name, Key={"pk": {"S": "k1"}}, ConsistentRead=True)
        assert got["Item"] == item
        # What went through the proxy is what moto holds.
        direct_got = await direct.get_item(TableName=name, Key={"pk": {"S": "k1"}})
        assert direct_got["Item"] == item

        url = (
            await sqs.create_queue(
                QueueName=f"q-{name}.fifo",
                Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
            )
        )["QueueUrl"]
        for n in range(3):
            await sqs.send_message(
                QueueUrl=url,
                MessageBody=f"body-{n} é✓",
                MessageGroupId="g",
                MessageDeduplicationId=f"d-{n}",
            )
        received = (await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10))["Messages"]
        assert [m["Body"] for m in received] == [f"body-{n} é✓" for n in range(3)]
        for message in received:
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

        key = (await kms.create_key())["KeyMetadata"]["KeyId"]
        context = {"table": name}
        data_key = await kms.generate_data_key(
            KeyId=key, KeySpec="AES_256", EncryptionContext=context
        )
        plain = await kms.decrypt(
            CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=context
        )
        assert plain["Plaintext"] == data_key["Plaintext"]

        streams_listed = await streams.list_streams(TableName=name)
        assert len(streams_listed["Streams"]) == 1

    # moto's own API is passed through, and not counted as an AWS call.
    control = await asyncio.to_thread(_get, f"{proxy.url}/moto-api/")
    assert control == 200

    stats = proxy.stats()
    assert stats.operations("dynamodb") == {"CreateTable": 1, "PutItem": 1, "GetItem": 1}
    assert stats.operations("sqs") == {
        "CreateQueue": 1,
        "SendMessage": 3,
        "ReceiveMessage": 1,
        "DeleteMessage": 3,
    }
    assert stats.operations("kms") == {"CreateKey": 1, "GenerateDataKey": 1, "Decrypt": 1}
    assert stats.operations("dynamodbstreams") == {"ListStreams": 1}
    for service in SERVICES:
        assert stats.forwarded(service) == stats.calls(service)
    assert stats.injected() == 0
    assert stats.passthrough == 1


def _get(url: str) -> int:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        response.read()
        return int(response.status)


def _boto3_round_trip(url: str, name: str) -> None:
    ddb, sqs, kms = (boto_client(s, url) for s in ("dynamodb", "sqs", "kms"))
    try:
        ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        item = {"pk": {"S": "k1"}, "blob": {"B": b"\x00\xff" * 100}, "s": {"S": "é✓"}}
        ddb.put_item(TableName=name, Item=item)
        assert ddb.get_item(TableName=name, Key={"pk": {"S": "k1"}})["Item"] == item

        url_ = sqs.create_queue(QueueName=f"q-{name}.fifo", Attributes={"FifoQueue": "true"})[
            "QueueUrl"
        ]
        sqs.send_message(
            QueueUrl=url_, MessageBody="hello", MessageGroupId="g", MessageDeduplicationId="d"
        )
        (message,) = sqs.receive_message(QueueUrl=url_)["Messages"]
        assert message["Body"] == "hello"
        sqs.delete_message(QueueUrl=url_, ReceiptHandle=message["ReceiptHandle"])

        key = kms.create_key()["KeyMetadata"]["KeyId"]
        data_key = kms.generate_data_key(KeyId=key, NumberOfBytes=32)
        plain = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"]
        assert plain == data_key["Plaintext"]
    finally:
        for client in (ddb, sqs, kms):
            client.close()


async def test_pass_through_with_boto3(proxy: FaultProxy) -> None:
    # boto3 is synchronous: off the loop the in-process proxy runs on.
    await asyncio.to_thread(_boto3_round_trip, proxy.url, tag())
    stats = proxy.stats()
    assert stats.operations("dynamodb") == {"CreateTable": 1, "PutItem": 1, "GetItem": 1}
    assert stats.operations("sqs") == {
        "CreateQueue": 1,
        "SendMessage": 1,
        "ReceiveMessage": 1,
        "DeleteMessage": 1,
    }
    assert stats.operations("kms") == {"CreateKey": 1, "GenerateDataKey": 1, "Decrypt": 1}
    assert stats.injected() == 0


# --- each fault kind, as botocore sees it -------------------------------------------------------


def check_error(exc: BaseException, service: str, kind: str) -> int:
    """Assert `exc` is what `kind` must look like to the worker; return the HTTP status."""
    if kind in TRANSPORT_KINDS:
        expected = ReadTimeoutError if kind == TIMEOUT else ConnectionClosedError
        assert type(exc) is expected, repr(exc)
        assert is_transient(exc)
        return 0
    assert isinstance(exc, ClientError), repr(exc)
    code = exc.response["Error"]["Code"]
    status = int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    if kind == THROTTLE:
        assert (status, code) == (400, THROTTLE_CODE[service])
    elif kind == ERROR5XX:
        assert status in INTERNAL_CODE and code == INTERNAL_CODE[status][service]
    else:
        assert (status, code) == (400, KMS_CODE[kind])
        assert not is_transient(exc)  # a refusal, not a blip: the cipher decides what it means
        return status
    assert code in TRANSIENT_CODES
    assert is_transient(exc)
    return status


@pytest.mark.parametrize("kind", [THROTTLE, ERROR5XX, DROP_BEFORE, DROP_AFTER, TIMEOUT])
@pytest.mark.parametrize("service", SERVICES)
async def test_each_fault_reaches_aiobotocore_as_intended(
    proxy: FaultProxy, service: str, kind: str
) -> None:
    proxy.set_rules(outage(kind, service))
    operation, probe = PROBES[service]
    statuses = set()
    attempts = 6 if kind == ERROR5XX else 1  # 5xx: 500 or 503, both must parse
    async with aio_client(service, proxy.url, read_timeout=SHORT_READ_TIMEOUT_S) as client:
        for _ in range(attempts):
            with pytest.raises(Exception) as caught:  # noqa: PT011 - checked below
                await probe(client)
            statuses.add(check_error(caught.value, service, kind))
        if kind == ERROR5XX:
            assert statuses == {500, 503}
        proxy.set_rules(None)  # the outage ends: the same client works again
        await probe(client)
    stats = proxy.stats()
    assert stats.injected(service, kind, operation) == attempts
    assert stats.calls(service, operation) == attempts + 1
    reached = attempts if kind == DROP_AFTER else 0
    assert stats.forwarded(service, operation) == reached + 1


@pytest.mark.parametrize("kind", [THROTTLE, ERROR5XX, DROP_BEFORE, DROP_AFTER, TIMEOUT])
@pytest.mark.parametrize("service", SERVICES)
async def test_each_fault_reaches_boto3_as_intended(
    proxy: FaultProxy, service: str, kind: str
) -> None:
    proxy.set_rules(outage(kind, service))
    _, probe = PROBES[service]
    attempts = 6 if kind == ERROR5XX else 1

    def run() -> set[int]:
        client = boto_client(service, proxy.url, read_timeout=SHORT_READ_TIMEOUT_S)
        try:
            statuses = set()
            for _ in range(attempts):
                with pytest.raises(Exception) as caught:  # noqa: PT011 - checked below
                    probe(client)
                statuses.add(check_error(caught.value, service, kind))
            return statuses
        finally:
            client.close()

    statuses = await asyncio.to_thread(run)
    if kind == ERROR5XX:
        assert statuses == {500, 503}
    assert proxy.stats().injected(service, kind) == attempts


@pytest.mark.parametrize("kind", [KMS_ACCESS_DENIED, KMS_DISABLED, KMS_INVALID_STATE])
async def test_kms_refusals_reach_both_clients(proxy: FaultProxy, kind: str) -> None:
    async with aio_client("kms", proxy.url) as kms:
        key = (await kms.create_key())["KeyMetadata"]["KeyId"]
        proxy.set_rules(outage(kind, "kms"))
        with pytest.raises(ClientError) as caught:
            await kms.generate_data_key(KeyId=key, KeySpec="AES_256")
        check_error(caught.value, "kms", kind)

    def sync() -> None:
        client = boto_client("kms", proxy.url)
        try:
            with pytest.raises(ClientError) as caught:
                client.decrypt(CiphertextBlob=b"x" * 64)
            check_error(caught.value, "kms", kind)
        finally:
            client.close()

    await asyncio.to_thread(sync)
    assert proxy.stats().injected("kms", kind) == 2


def new_item(user: str) -> dict[str, Any]:
    at = datetime.now(UTC).replace(microsecond=0).isoformat()
    state = profile.apply(
        UserState(), event("f-0", "user.created", user, at, {"given_name": "Fault-Proxy-Secret"})
    )
    remembered = (profile.Remembered(profile.id_tag("f-0")),)
    return to_item(user, state, rev=1, recent_events=remembered, expires_at=None)


@pytest.mark.parametrize(
    "kind",
    [KMS_ACCESS_DENIED, KMS_DISABLED, KMS_INVALID_STATE, THROTTLE, ERROR5XX, DROP_BEFORE, TIMEOUT],
)
async def test_kms_faults_through_the_item_cipher_are_key_unavailable(
    proxy: FaultProxy, kind: str
) -> None:
    async with aio_client("kms", proxy.url) as kms:
        key_arn = (await kms.create_key())["KeyMetadata"]["Arn"]
    # The SDK's KMS client, as worker.app builds it (boto3), but with no retries of its own.
    kms_sync = boto_client("kms", proxy.url, read_timeout=SHORT_READ_TIMEOUT_S)
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-faults-crypto")
    try:
        ref = KeyRef.kms(key_arn)
        cipher = ItemCipher(KmsKeys(ref, kms_sync), "users", executor, ref)
        user = f"urn:fdc:gov.uk:2022:{tag()}"
        sealed = await cipher.seal(new_item(user))  # healthy KMS
        # `d` (record format 2: the clock and every claim) was encrypted
        assert (await cipher.open(sealed))["d"] != sealed["d"]

        proxy.set_rules(outage(kind, "kms"))
        with pytest.raises(KeyUnavailable) as sealing:
            await cipher.seal(new_item(user))
        assert "sealing" in sealing.value.reason
        with pytest.raises(KeyUnavailable) as opening:
            await cipher.open(sealed)
        assert "opening" in opening.value.reason
        for reason in (sealing.value.reason, opening.value.reason):
            assert "Fault-Proxy-Secret" not in reason and user not in reason
        if kind in KMS_CODE:
            assert KMS_CODE[kind] in opening.value.reason

        proxy.set_rules(None)  # KMS is back: the record opens again
        assert await cipher.open(sealed) is not None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        kms_sync.close()
    stats = proxy.stats()
    assert stats.injected("kms", kind, "GenerateDataKey") == 1
    assert stats.injected("kms", kind, "Decrypt") == 1


# --- retries under a mix of faults ----------------------------------------------------------------


async def test_call_rides_out_throttling_5xx_and_drops(
    proxy: FaultProxy, moto_endpoint: str
) -> None:
    name = tag()
    async with aio_client("dynamodb", moto_endpoint) as direct:
        await direct.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    proxy.set_rules(
        FaultRules.everywhere(
            {THROTTLE: 0.05, ERROR5XX: 0.02, DROP_BEFORE: 0.005, DROP_AFTER: 0.005}, seed=2026
        )
    )
    async with aio_client("dynamodb", proxy.url) as ddb:
        for n in range(300):
            await call(
                "PutItem",
                ddb.put_item,
                max_attempts=8,
                TableName=name,
                Item={"pk": {"S": f"user-{n}"}, "n": {"N": str(n)}},
            )
    async with aio_client("dynamodb", moto_endpoint) as direct:
        count = (await direct.scan(TableName=name, Select="COUNT"))["Count"]
    assert count == 300

    stats = proxy.stats()
    injected = stats.injected("dynamodb")
    assert stats.injected("dynamodb", THROTTLE) > 0 and stats.injected("dynamodb", ERROR5XX) > 0
    assert stats.injected("dynamodb", DROP_BEFORE) + stats.injected("dynamodb", DROP_AFTER) > 0
    # Every fault cost exactly one retry; every success and every drop_after reached moto.
    assert stats.calls("dynamodb", "PutItem") == 300 + injected
    assert stats.forwarded("dynamodb", "PutItem") == 300 + stats.injected("dynamodb", DROP_AFTER)


async def test_drop_after_means_the_write_happened(proxy: FaultProxy, moto_endpoint: str) -> None:
    name = tag()
    async with aio_client("dynamodb", moto_endpoint) as direct:
        await direct.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        async with aio_client("dynamodb", proxy.url) as ddb:
            for kind, pk in ((DROP_BEFORE, "before"), (DROP_AFTER, "after")):
                proxy.set_rules(outage(kind, "dynamodb"))
                with pytest.raises(ConnectionClosedError):
                    await ddb.put_item(TableName=name, Item={"pk": {"S": pk}})
        proxy.set_rules(None)
        before = await direct.get_item(TableName=name, Key={"pk": {"S": "before"}})
        after = await direct.get_item(TableName=name, Key={"pk": {"S": "after"}})
    assert "Item" not in before  # never reached moto
    assert after["Item"] == {"pk": {"S": "after"}}  # applied, though the client saw a failure


# --- rules --------------------------------------------------------------------------------------


async def test_same_seed_same_faults(proxy: FaultProxy) -> None:
    rules = FaultRules.everywhere({THROTTLE: 0.3, ERROR5XX: 0.2}, seed=99)

    async def outcomes() -> list[str]:
        proxy.set_rules(rules)
        seen = []
        async with aio_client("dynamodb", proxy.url) as ddb:
            for _ in range(40):
                try:
                    await ddb.list_tables(Limit=1)
                    seen.append("ok")
                except ClientError as exc:
                    seen.append(exc.response["Error"]["Code"])
        return seen

    first, second = await outcomes(), await outcomes()
    assert first == second
    assert {"ok", "ThrottlingException"} <= set(first)


async def test_operations_filter_and_latency(proxy: FaultProxy) -> None:
    async with aio_client("kms", proxy.url) as kms:
        key = (await kms.create_key())["KeyMetadata"]["KeyId"]
        data_key = await kms.generate_data_key(KeyId=key, NumberOfBytes=32)
        # An outage of GenerateDataKey only: Decrypt still works.
        proxy.set_rules(
            FaultRules(
                services={
                    "kms": ServiceRules(
                        outage=KMS_DISABLED, operations=frozenset({"GenerateDataKey"})
                    )
                }
            )
        )
        with pytest.raises(ClientError, match="DisabledException"):
            await kms.generate_data_key(KeyId=key, NumberOfBytes=32)
        await kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])

        proxy.set_rules(FaultRules(latency_ms=150))
        started = time.monotonic()
        await kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])
        assert time.monotonic() - started >= 0.15


async def test_max_faults_caps_an_outage(proxy: FaultProxy) -> None:
    proxy.set_rules(FaultRules().with_outage("dynamodb", THROTTLE, max_faults=2))
    async with aio_client("dynamodb", proxy.url) as ddb:
        for _ in range(2):
            with pytest.raises(ClientError, match="ThrottlingException"):
                await ddb.list_tables()
        await ddb.list_tables()
    assert proxy.stats().injected("dynamodb", THROTTLE) == 2


async def test_unreachable_upstream_is_a_transient_502() -> None:
    async with (
        FaultProxy(f"http://127.0.0.1:{free_port()}") as url,
        aio_client("sqs", url) as sqs,
    ):
        with pytest.raises(ClientError) as caught:
            await sqs.list_queues()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert is_transient(caught.value)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"services": {"dynamodb": {"rates": {"explode": 0.1}}}}, "unknown fault kind"),
        ({"services": {"dynamodb": {"rates": {"throttle": 0.7, "error5xx": 0.5}}}}, "add up"),
        ({"services": {"dynamodb": {"outage": "kms_disabled"}}}, "KMS fault"),
        ({"services": {"s3": {}}}, "unknown service"),
        ({"services": {"sqs": {"rates": {"throttle": 1.5}}}}, "within 0..1"),
        ({"sevrices": {}}, "unknown rules field"),
    ],
)
def test_invalid_rules_are_refused(rules: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultRules.coerce(rules)


def test_rules_round_trip() -> None:
    rules = FaultRules(
        services={
            "*": ServiceRules(rates={THROTTLE: 0.1}),
            "kms": ServiceRules(
                outage=KMS_DISABLED, operations=frozenset({"Decrypt"}), max_faults=2
            ),
        },
        seed=5,
        latency_ms=2,
        timeout_hold_s=3,
    )
    assert FaultRules.coerce(rules.to_json()) == rules
    assert rules.with_outage("kms", None).services["kms"].outage is None


# --- the separate process -----------------------------------------------------------------------


def test_process_mode_rules_at_runtime(moto_endpoint: str) -> None:
    rules = outage(THROTTLE, "dynamodb")
    with fault_proxy_process(moto_endpoint, rules) as (url, control):
        assert url.startswith("http://127.0.0.1:")
        ddb, kms = boto_client("dynamodb", url), boto_client("kms", url)
        try:
            with pytest.raises(ClientError, match="ThrottlingException"):
                ddb.list_tables()
            key = kms.create_key()["KeyMetadata"]["KeyId"]  # KMS is healthy

            # Start a KMS outage while the "worker" runs, then end it.
            control.set_rules(control.rules().with_outage("dynamodb", None))
            control.set_rules(control.rules().with_outage("kms", KMS_INVALID_STATE))
            ddb.list_tables()
            with pytest.raises(ClientError, match="KMSInvalidStateException"):
                kms.generate_data_key(KeyId=key, NumberOfBytes=32)
            control.set_rules(control.rules().with_outage("kms", None))
            kms.generate_data_key(KeyId=key, NumberOfBytes=32)

            stats: ProxyStats = control.stats()
            assert stats.calls("dynamodb", "ListTables") == 2
            assert stats.injected("dynamodb", THROTTLE) == 1
            assert stats.operations("kms") == {"CreateKey": 1, "GenerateDataKey": 2}
            assert stats.injected("kms", KMS_INVALID_STATE, "GenerateDataKey") == 1
            assert stats.forwarded("kms") == 2

            with pytest.raises(ValueError, match="unknown fault kind"):
                control.set_rules({"services": {"kms": {"outage": "meltdown"}}})
            control.reset_stats()
            assert control.stats().calls("kms") == 0
        finally:
            ddb.close()
            kms.close()
