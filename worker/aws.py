"""AWS plumbing shared by every adapter: client config, transient-error retries, translation.

botocore's own retries are switched off so that exactly one layer retries: tenacity here, with
exponential backoff and full jitter, a bounded number of attempts. What is still failing after
that is translated once, into AwsUnavailable (retry the message later).
"""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import aiobotocore
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from . import metrics
from .errors import AwsUnavailable, CredentialsMissing, ResourceMissing

T = TypeVar("T")

TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TransactionConflictException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "LimitExceededException",
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "KMSInternalException",
        "KeyUnavailableException",
        "DependencyTimeoutException",
        "SlowDown",
        "AWS.SimpleQueueService.InternalError",
    }
)
# What DynamoDB and SQS answer for a table or queue that does not exist.
_MISSING_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)
_TRANSIENT_TRANSPORT = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
)


class Refused(Exception):
    """An AWS refusal the caller expects and decides on (say, ConditionalCheckFailedException).

    `call` raises it only for the codes its caller listed in `expected`, with the service's
    response (a losing conditional write's old item is in it). It never leaves an adapter: the
    adapter turns it into its own answer, so no botocore type reaches the domain.
    """

    def __init__(self, operation: str, code: str, response: dict[str, Any]) -> None:
        super().__init__(f"{operation} refused ({code})")
        self.operation = operation
        self.code = code
        self.response = response


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT_TRANSPORT):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in TRANSIENT_CODES or int(status) >= 500
    return False


def _user_agent() -> str:
    try:
        ours = version("userstore")
    except PackageNotFoundError:  # run from a source tree that was never installed
        ours = "unknown"
    # aiobotocore's session appends "botocore/<version>" itself.
    python = platform.python_version()
    return f"userstore/{ours} aiobotocore/{aiobotocore.__version__} Python/{python}"


# Given a User-Agent, botocore sends it as it is. Otherwise it rebuilds and sanitises its own,
# component by component, on every request: about 4% of the worker's CPU in the benchmark's
# profile. This one still names the SDK and its version; it leaves out botocore's feature ids.
USER_AGENT = _user_agent()


def client_config(
    max_pool_connections: int, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0
) -> AioConfig:
    return AioConfig(
        retries={"total_max_attempts": 1},  # tenacity retries, see `call`
        max_pool_connections=max_pool_connections,
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        user_agent=USER_AGENT,
    )


async def call(
    operation: str,
    fn: Callable[..., Awaitable[T]],
    /,
    *,
    max_attempts: int,
    expected: frozenset[str] = frozenset(),
    **kwargs: Any,
) -> T:
    """Run one AWS call, retrying transient failures, and translate what still fails.

    A ClientError whose code is in `expected` becomes Refused, for the adapter to decide on;
    every other failure becomes AwsUnavailable. Nothing from botocore propagates.
    """

    def count_retry(_: RetryCallState) -> None:
        current = metrics.current.get()
        if current is not None:
            current.aws_retries.labels(operation).inc()

    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            stop=stop_after_attempt(max_attempts),
            before_sleep=count_retry,
            reraise=True,
        ):
            with attempt:
                return await fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and error_code(exc) in expected:
            raise Refused(operation, error_code(exc), dict(exc.response)) from None
        raise unavailable(operation, exc, kwargs) from exc
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover


def unavailable(operation: str, exc: ClientError | BotoCoreError, kwargs: Any) -> AwsUnavailable:
    """What a failed call means: a missing table or queue (named), missing credentials, an
    endpoint that can't be reached (named), or plain unavailability."""
    code = error_code(exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return CredentialsMissing(f"{operation}: no AWS credentials found ({code})")
    if code in _MISSING_CODES:
        kind, name = _resource(kwargs)
        named = f"{operation}: {kind} {name!r} not found" if name else f"{operation} failed"
        return ResourceMissing(f"{named} ({code})", kind=kind, name=name)
    endpoint = exc.kwargs.get("endpoint_url") if isinstance(exc, BotoCoreError) else None
    if endpoint:
        return AwsUnavailable(f"{operation} failed: could not reach {endpoint} ({code})")
    return AwsUnavailable(f"{operation} failed ({code})")


def _resource(kwargs: Any) -> tuple[str, str]:
    """The table or queue a call named."""
    if "TableName" in kwargs:
        return "table", str(kwargs["TableName"])
    if "RequestItems" in kwargs:
        return "table", ", ".join(kwargs["RequestItems"])
    if "QueueName" in kwargs:
        return "queue", str(kwargs["QueueName"])
    if "QueueUrl" in kwargs:
        return "queue", str(kwargs["QueueUrl"]).rstrip("/").rpartition("/")[2]
    return "resource", ""


async def pages(
    operation: str, fn: Callable[..., Awaitable[Any]], /, *, max_attempts: int, **kwargs: Any
) -> AsyncIterator[dict[str, Any]]:
    """Every page of a DynamoDB Scan or Query, following LastEvaluatedKey; each page is one
    `call` (retried and translated on its own)."""
    start: dict[str, Any] | None = None
    while True:
        extra: dict[str, Any] = {} if start is None else {"ExclusiveStartKey": start}
        page: dict[str, Any] = await call(
            operation, fn, max_attempts=max_attempts, **kwargs, **extra
        )
        yield page
        start = page.get("LastEvaluatedKey")
        if not start:
            return
