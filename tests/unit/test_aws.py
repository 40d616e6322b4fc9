"""worker.aws: which failures are transient, how `call` retries them, what still fails becomes;
the clients' User-Agent.

No AWS and no network: the "AWS call" is a fake coroutine function failing a set number of times,
and a request is stopped by a hook before it is sent.
"""

from __future__ import annotations

from typing import Any

import pytest
import tenacity.wait
from aiobotocore.session import get_session
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from userstore.worker.aws import USER_AGENT, Refused, call, client_config, is_transient
from userstore.worker.errors import AwsUnavailable, RetryLater

ENDPOINT = "https://dynamodb.eu-west-2.amazonaws.com"


def client_error(code: str, status: int = 400, operation: str = "PutItem") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} (fake)"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


def throttling() -> ClientError:
    return client_error("ThrottlingException")


def internal_error() -> ClientError:
    return client_error("InternalError", status=500)


def connection_refused() -> EndpointConnectionError:
    return EndpointConnectionError(endpoint_url=ENDPOINT)


class Flaky:
    """An async AWS operation that raises `failures` errors (made fresh each time), then returns."""

    def __init__(self, make_error: Any, failures: int, value: Any = "ok") -> None:
        self.make_error = make_error
        self.failures = failures
        self.value = value
        self.attempts = 0
        self.raised: list[BaseException] = []
        self.kwargs: list[dict[str, Any]] = []

    async def __call__(self, **kwargs: Any) -> Any:
        self.attempts += 1
        self.kwargs.append(kwargs)
        if self.attempts <= self.failures:
            error = self.make_error()
            self.raised.append(error)
            raise error
        return self.value


def error_id(error: BaseException) -> str:
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "none")
        return f"{error.response['Error']['Code']}-{status}"
    return type(error).__name__


TRANSIENT_FAILURES = pytest.mark.parametrize(
    ("make_error", "code"),
    [
        (throttling, "ThrottlingException"),
        (internal_error, "InternalError"),
        (connection_refused, "EndpointConnectionError"),
    ],
    ids=["throttling", "http-500", "connection-refused"],
)


# --- is_transient -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        client_error("ThrottlingException"),
        client_error("ProvisionedThroughputExceededException"),
        client_error("RequestLimitExceeded"),
        client_error("KMSInternalException", status=500),
        client_error("InternalError", status=500),
        client_error("SomethingNew", status=503),  # unknown code, but a 5xx
        client_error("ServiceUnavailable", status=0),  # known code, status missing
        EndpointConnectionError(endpoint_url=ENDPOINT),
        ConnectTimeoutError(endpoint_url=ENDPOINT),
        ReadTimeoutError(endpoint_url=ENDPOINT),
        ConnectionClosedError(endpoint_url=ENDPOINT),
    ],
    ids=error_id,
)
def test_transient_failures(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        client_error("ValidationException"),
        client_error("ConditionalCheckFailedException"),
        client_error("AccessDeniedException"),
        client_error("ResourceNotFoundException"),
        client_error("InvalidCiphertextException"),
        client_error("SomethingNew", status=499),
        ClientError({"Error": {"Code": "ValidationException"}}, "GetItem"),  # no metadata at all
        NoCredentialsError(),
        ValueError("a bug, not AWS"),
    ],
    ids=error_id,
)
def test_permanent_failures(error: BaseException) -> None:
    assert not is_transient(error)


# --- call: retries ------------------------------------------------------------------------------


@TRANSIENT_FAILURES
@pytest.mark.parametrize(("failures", "max_attempts"), [(0, 1), (1, 3), (2, 3), (3, 4)])
async def test_transient_failures_are_retried_until_success(
    make_error: Any, code: str, failures: int, max_attempts: int
) -> None:
    fake = Flaky(make_error, failures, value={"Item": {"user_id": {"S": "u"}}})
    result = await call(
        "GetItem", fake, max_attempts=max_attempts, TableName="users", ConsistentRead=True
    )
    assert result == {"Item": {"user_id": {"S": "u"}}}
    assert fake.attempts == failures + 1
    # Every attempt is the same request.
    assert fake.kwargs == [{"TableName": "users", "ConsistentRead": True}] * (failures + 1)


@TRANSIENT_FAILURES
@pytest.mark.parametrize("max_attempts", [1, 3])
async def test_persistent_transient_failure_becomes_aws_unavailable(
    make_error: Any, code: str, max_attempts: int
) -> None:
    # One failure more than the attempts allowed: the success never comes.
    fake = Flaky(make_error, failures=max_attempts)
    with pytest.raises(AwsUnavailable) as caught:
        await call("PutItem", fake, max_attempts=max_attempts)
    assert fake.attempts == max_attempts
    assert isinstance(caught.value, RetryLater)
    assert "PutItem" in str(caught.value)
    assert code in str(caught.value)
    assert caught.value.reason == str(caught.value)
    # Chained to the last error actually raised, not to a copy or the first one.
    assert caught.value.__cause__ is fake.raised[-1]


async def test_aws_unavailable_message_names_operation_and_code() -> None:
    fake = Flaky(throttling, failures=2)
    with pytest.raises(
        AwsUnavailable, match=r"^DeleteMessageBatch failed \(ThrottlingException\)$"
    ):
        await call("DeleteMessageBatch", fake, max_attempts=2)
    assert isinstance(fake.raised[-1], ClientError)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ValidationException", 400),
        ("AccessDeniedException", 400),
        ("ResourceNotFoundException", 400),
    ],
)
async def test_permanent_client_error_is_not_retried(code: str, status: int) -> None:
    fake = Flaky(lambda: client_error(code, status), failures=1)
    with pytest.raises(AwsUnavailable) as caught:
        await call("PutItem", fake, max_attempts=5)
    assert fake.attempts == 1
    assert str(caught.value) == f"PutItem failed ({code})"
    assert caught.value.__cause__ is fake.raised[0]


async def test_permanent_botocore_error_is_not_retried() -> None:
    fake = Flaky(NoCredentialsError, failures=1)
    with pytest.raises(AwsUnavailable, match=r"\(NoCredentialsError\)") as caught:
        await call("ReceiveMessage", fake, max_attempts=5)
    assert fake.attempts == 1
    assert caught.value.__cause__ is fake.raised[0]


async def test_an_expected_code_becomes_refused_with_no_botocore_type() -> None:
    fake = Flaky(lambda: client_error("ConditionalCheckFailedException"), failures=1)
    with pytest.raises(Refused) as caught:
        await call(
            "PutItem",
            fake,
            max_attempts=5,
            expected=frozenset({"ConditionalCheckFailedException"}),
        )
    assert fake.attempts == 1
    assert (caught.value.operation, caught.value.code) == (
        "PutItem",
        "ConditionalCheckFailedException",
    )
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    # Raised from None: the ClientError is neither the cause nor the context.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_expected_does_not_let_other_codes_through() -> None:
    fake = Flaky(lambda: client_error("ValidationException"), failures=1)
    with pytest.raises(AwsUnavailable):
        await call(
            "PutItem",
            fake,
            max_attempts=5,
            expected=frozenset({"ConditionalCheckFailedException"}),
        )
    assert fake.attempts == 1


async def test_non_aws_exception_is_neither_retried_nor_translated() -> None:
    # A bug in the caller's code is not an AWS outage: it must surface as itself.
    fake = Flaky(lambda: KeyError("Item"), failures=3)
    with pytest.raises(KeyError):
        await call("GetItem", fake, max_attempts=5)
    assert fake.attempts == 1


# --- call: backoff ------------------------------------------------------------------------------


class RecordingRandom:
    """Stands in for the `random` module tenacity's wait strategies draw from; waits become 0."""

    def __init__(self) -> None:
        self.windows: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.windows.append((low, high))
        return 0.0

    def random(self) -> float:  # pragma: no cover - only wait_random uses it
        raise AssertionError("call() should use wait_random_exponential")


async def test_waits_are_full_jitter_in_a_doubling_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing timed: record the window each wait is drawn from instead of sleeping it.
    recorder = RecordingRandom()
    monkeypatch.setattr(tenacity.wait, "random", recorder)
    fake = Flaky(throttling, failures=7)
    value = await call("GetItem", fake, max_attempts=8)
    assert value == "ok"
    assert fake.attempts == 8
    # One wait between consecutive attempts, each drawn uniformly from [0, cap): full jitter,
    # with the cap doubling from 0.05 s after the first failure up to the 2 s maximum.
    assert [low for low, _ in recorder.windows] == [0.0] * 7
    highs = [high for _, high in recorder.windows]
    assert highs == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0])


class _Sent(Exception):
    """Raised by a before-send hook: the request is looked at, never sent."""


async def test_requests_carry_the_fixed_user_agent_naming_userstore_and_the_sdk() -> None:
    seen: list[str] = []

    def capture(request: Any, **_: Any) -> None:
        seen.append(request.headers["User-Agent"])
        raise _Sent

    session = get_session()
    async with session.create_client(
        "sqs",
        region_name="eu-west-2",
        endpoint_url="http://127.0.0.1:9",  # never reached: the hook stops the request first
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=client_config(10),
    ) as sqs:
        sqs.meta.events.register("before-send.sqs.ListQueues", capture)
        with pytest.raises(_Sent):
            await sqs.list_queues()
    ua = seen[0] if isinstance(seen[0], str) else seen[0].decode()
    assert ua.startswith(f"{USER_AGENT} botocore/")  # the session adds botocore's version
    assert ua.startswith("userstore/") and " aiobotocore/" in ua and " Python/" in ua
