"""A fault-injecting HTTP proxy between AWS SDK clients and a moto server, on loopback.

Point every AWS client at it (`AWS_ENDPOINT_URL=<proxy url>`): aiobotocore and boto3 alike. It
forwards each request to the upstream emulator and, per the rules in force, answers some of them
itself with the failures real AWS produces:

    throttle            HTTP 400, the service's throttling error (JSON protocol shape)
    error5xx            HTTP 500 (the service's internal error) or 503 ServiceUnavailable
    timeout             no answer for `timeout_hold_s` seconds, then the connection is closed
    drop_before         the connection is closed without an answer; nothing reached upstream
    drop_after          forwarded upstream (the call took effect), then closed without an answer
    kms_access_denied   KMS: 400 AccessDeniedException
    kms_disabled        KMS: 400 DisabledException
    kms_invalid_state   KMS: 400 KMSInvalidStateException   (moto does not enforce key state)

and `latency_ms` adds a delay to every call. Rules are per service (`dynamodb`,
`dynamodbstreams`, `kms`, `sqs`, or `*` for any service not listed): a rate per kind, and an
`outage` kind that fails every call until it is switched off; either can be narrowed to some
operations, and capped (`max_faults`: "drop the next PutItem" is an outage capped at 1). A
seeded RNG makes a run reproducible (one draw per call that has rates, in arrival order).

The service comes from `X-Amz-Target`, else from the SigV4 credential scope; anything else
(moto's own `/moto-api/`, say) is passed through untouched and uncounted.

Control, on the same port under `/__faults__/`:

    GET    /__faults__/stats    counts per service and operation: calls, forwarded, injected,
                                and what each distinct request named (see `named_resources`)
    DELETE /__faults__/stats    reset the counts
    GET    /__faults__/rules    the rules in force
    PUT    /__faults__/rules    replace the rules (JSON, as `FaultRules.to_dict`); 400 if invalid

Three ways to run it:

    async with FaultProxy(upstream, rules) as url: ...          # in-process, same event loop
    with fault_proxy_process(upstream, rules) as (url, control): ...   # a separate process
    python -m tests.faults.proxy --upstream URL --port 0 --rules JSON  # prints its URL first

Keep this module to the standard library and aiohttp: the process mode imports nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

CONTROL_PREFIX = "/__faults__/"

SERVICES = ("dynamodb", "dynamodbstreams", "kms", "sqs")
ANY_SERVICE = "*"

THROTTLE = "throttle"
ERROR5XX = "error5xx"
TIMEOUT = "timeout"
DROP_BEFORE = "drop_before"
DROP_AFTER = "drop_after"
KMS_ACCESS_DENIED = "kms_access_denied"
KMS_DISABLED = "kms_disabled"
KMS_INVALID_STATE = "kms_invalid_state"
# The order matters: a call's single random draw is matched against the rates in this order.
KINDS = (
    THROTTLE,
    ERROR5XX,
    TIMEOUT,
    DROP_BEFORE,
    DROP_AFTER,
    KMS_ACCESS_DENIED,
    KMS_DISABLED,
    KMS_INVALID_STATE,
)
KMS_ONLY_KINDS = frozenset({KMS_ACCESS_DENIED, KMS_DISABLED, KMS_INVALID_STATE})

# X-Amz-Target prefixes (JSON protocols). Streams sign as "dynamodb", so only the target tells.
_TARGETS = (
    ("DynamoDBStreams_20120810.", "dynamodbstreams"),
    ("DynamoDB_20120810.", "dynamodb"),
    ("TrentService.", "kms"),
    ("AmazonSQS.", "sqs"),
)
_CONTENT_TYPES = {
    "dynamodb": "application/x-amz-json-1.0",
    "dynamodbstreams": "application/x-amz-json-1.0",
    "sqs": "application/x-amz-json-1.0",
    "kms": "application/x-amz-json-1.1",
}
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",  # recomputed by aiohttp for the bytes actually sent
    }
)


# --- rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceRules:
    """Faults for one service. `outage`, when set, is the kind every call fails with.

    `operations` (operation names such as "PutItem") limits the rates and the outage to those
    operations; `max_faults` stops injecting after that many faults (per service, counted from
    when the rules were set: "drop the next PutItem" is an outage with max_faults=1);
    `latency_ms` overrides the global latency for this service.
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    outage: str | None = None
    operations: frozenset[str] | None = None
    max_faults: int | None = None
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rates": dict(self.rates), "outage": self.outage}
        if self.operations is not None:
            out["operations"] = sorted(self.operations)
        if self.max_faults is not None:
            out["max_faults"] = self.max_faults
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceRules:
        _only_keys(
            data, {"rates", "outage", "operations", "max_faults", "latency_ms"}, "service rules"
        )
        rates = data.get("rates") or {}
        if not isinstance(rates, Mapping):
            raise ValueError("rates must be an object of kind -> rate")
        operations = data.get("operations")
        latency = data.get("latency_ms")
        max_faults = data.get("max_faults")
        return cls(
            rates={str(k): float(v) for k, v in rates.items()},
            outage=None if data.get("outage") is None else str(data["outage"]),
            operations=None if operations is None else frozenset(str(o) for o in operations),
            max_faults=None if max_faults is None else int(max_faults),
            latency_ms=None if latency is None else float(latency),
        )

    def validate(self, service: str) -> None:
        kinds = set(self.rates) | ({self.outage} if self.outage else set())
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(KINDS)})")
            if kind in KMS_ONLY_KINDS and service not in ("kms", ANY_SERVICE):
                raise ValueError(f"{kind} is a KMS fault, not one of {service}")
        for kind, rate in self.rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate of {kind} must be within 0..1, got {rate}")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"rates of {service} add up to more than 1")
        if self.latency_ms is not None and self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.max_faults is not None and self.max_faults < 0:
            raise ValueError("max_faults must be >= 0")


@dataclass(frozen=True)
class FaultRules:
    """Every rule in force. `services` maps a service (or "*": any service not listed) to rules.

    KMS-only kinds under "*" apply to KMS calls only.
    """

    services: Mapping[str, ServiceRules] = field(default_factory=dict)
    seed: int = 0
    latency_ms: float = 0.0
    timeout_hold_s: float = 30.0

    def __post_init__(self) -> None:
        for service, rules in self.services.items():
            if service not in (*SERVICES, ANY_SERVICE):
                raise ValueError(f"unknown service {service!r} (known: {', '.join(SERVICES)}, *)")
            rules.validate(service)
        if self.latency_ms < 0 or self.timeout_hold_s < 0:
            raise ValueError("latency_ms and timeout_hold_s must be >= 0")

    @classmethod
    def everywhere(cls, rates: Mapping[str, float], **options: Any) -> FaultRules:
        """The same rates on every service."""
        return cls(services={ANY_SERVICE: ServiceRules(rates=dict(rates))}, **options)

    def with_service(self, service: str, rules: ServiceRules | None) -> FaultRules:
        services = dict(self.services)
        if rules is None:
            services.pop(service, None)
        else:
            services[service] = rules
        return replace(self, services=services)

    def with_outage(
        self,
        service: str,
        kind: str | None,
        operations: frozenset[str] | None = None,
        max_faults: int | None = None,
    ) -> FaultRules:
        """Start (kind) or end (None) an outage of one service, keeping its rates."""
        current = self.services.get(service, ServiceRules())
        return self.with_service(
            service,
            replace(
                current,
                outage=kind,
                operations=operations if operations is not None else current.operations,
                max_faults=max_faults,
            ),
        )

    def for_service(self, service: str) -> ServiceRules | None:
        return self.services.get(service) or self.services.get(ANY_SERVICE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "services": {name: rules.to_dict() for name, rules in self.services.items()},
            "seed": self.seed,
            "latency_ms": self.latency_ms,
            "timeout_hold_s": self.timeout_hold_s,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRules:
        _only_keys(data, {"services", "seed", "latency_ms", "timeout_hold_s"}, "rules")
        services = data.get("services") or {}
        if not isinstance(services, Mapping):
            raise ValueError("services must be an object of service -> rules")
        return cls(
            services={str(k): ServiceRules.from_dict(v) for k, v in services.items()},
            seed=int(data.get("seed", 0)),
            latency_ms=float(data.get("latency_ms", 0.0)),
            timeout_hold_s=float(data.get("timeout_hold_s", 30.0)),
        )

    @classmethod
    def coerce(cls, rules: FaultRules | Mapping[str, Any] | str | None) -> FaultRules:
        if rules is None:
            return cls()
        if isinstance(rules, FaultRules):
            return rules
        if isinstance(rules, str):
            rules = json.loads(rules)
            if not isinstance(rules, Mapping):
                raise ValueError("rules must be a JSON object")
        return cls.from_dict(rules)


def _only_keys(data: Mapping[str, Any], allowed: set[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a JSON object")
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(sorted(unknown))}")


# --- stats ------------------------------------------------------------------------------------


class ProxyStats:
    """A snapshot of the counters (the JSON of GET /__faults__/stats), with accessors."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data: dict[str, Any] = dict(data)

    def _service(self, service: str, operation: str | None) -> Mapping[str, Any]:
        entry: Mapping[str, Any] = self.data["services"].get(service, {})
        if operation is not None:
            entry = entry.get("operations", {}).get(operation, {})
        return entry

    def calls(self, service: str, operation: str | None = None) -> int:
        """Calls received (faulted or not)."""
        return int(self._service(service, operation).get("calls", 0))

    def forwarded(self, service: str, operation: str | None = None) -> int:
        """Calls that reached upstream (including drop_after ones)."""
        return int(self._service(service, operation).get("forwarded", 0))

    def injected(
        self, service: str | None = None, kind: str | None = None, operation: str | None = None
    ) -> int:
        """Faults injected, optionally for one service, kind and operation."""
        services = [service] if service is not None else list(self.data["services"])
        total = 0
        for name in services:
            counts: Mapping[str, int] = self._service(name, operation).get("injected", {})
            total += sum(n for k, n in counts.items() if kind is None or k == kind)
        return total

    def requests(self, service: str, operation: str) -> list[frozenset[str]]:
        """What each distinct call named (`named_resources`)."""
        found = self._service(service, operation).get("requests", [])
        return [frozenset(named) for named in found]

    def operations(self, service: str) -> dict[str, int]:
        """Calls per operation of one service."""
        ops: Mapping[str, Any] = self._service(service, None).get("operations", {})
        return {name: int(entry["calls"]) for name, entry in ops.items()}

    @property
    def upstream_errors(self) -> int:
        """Calls the proxy could not forward (upstream unreachable): answered 502."""
        return int(self.data.get("upstream_errors", 0))

    @property
    def passthrough(self) -> int:
        """Requests that were not AWS calls (moto's own API, say), passed through."""
        return int(self.data.get("passthrough", 0))

    def __repr__(self) -> str:
        return f"ProxyStats({self.data!r})"


@dataclass
class _Counts:
    calls: int = 0
    forwarded: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    requests: set[frozenset[str]] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "forwarded": self.forwarded,
            "injected": dict(self.injected),
            "requests": sorted(sorted(named) for named in self.requests),
        }


class _Stats:
    def __init__(self) -> None:
        self.services: dict[str, tuple[_Counts, dict[str, _Counts]]] = {}
        self.passthrough = 0
        self.upstream_errors = 0

    def _entries(self, service: str, operation: str) -> tuple[_Counts, _Counts]:
        total, ops = self.services.setdefault(service, (_Counts(), {}))
        return total, ops.setdefault(operation, _Counts())

    def call(self, service: str, operation: str, resources: frozenset[str] = frozenset()) -> None:
        for entry in self._entries(service, operation):
            entry.calls += 1
            entry.requests.add(resources)

    def forwarded(self, service: str, operation: str) -> None:
        for entry in self._entries(service, operation):
            entry.forwarded += 1

    def injected(self, service: str, operation: str, kind: str) -> None:
        for entry in self._entries(service, operation):
            entry.injected[kind] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "services": {
                name: {**total.to_dict(), "operations": {o: c.to_dict() for o, c in ops.items()}}
                for name, (total, ops) in self.services.items()
            },
            "passthrough": self.passthrough,
            "upstream_errors": self.upstream_errors,
        }


# --- the error shapes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorShape:
    """One AWS error answer: status, `__type`, message, and SQS's query-compatibility header."""

    status: int
    type: str
    message: str
    query_error: str | None = None


_DDB = "com.amazonaws.dynamodb.v20120810#"
_SQS = "com.amazonaws.sqs#"
_UNAVAILABLE = ErrorShape(503, "ServiceUnavailable", "Service is unavailable, try again later.")
THROTTLE_ERRORS = {
    "dynamodb": ErrorShape(400, _DDB + "ThrottlingException", "Rate of requests exceeded."),
    "dynamodbstreams": ErrorShape(400, _DDB + "ThrottlingException", "Rate exceeded."),
    "kms": ErrorShape(400, "ThrottlingException", "Rate exceeded"),
    # SQS speaks JSON but keeps its query-era codes through x-amzn-query-error; botocore reports
    # the header's code, RequestThrottled (the modelled exception).
    "sqs": ErrorShape(
        400, _SQS + "RequestThrottled", "Request is throttled.", "RequestThrottled;Sender"
    ),
}
INTERNAL_ERRORS = {
    "dynamodb": ErrorShape(500, _DDB + "InternalServerError", "Internal server error"),
    "dynamodbstreams": ErrorShape(500, _DDB + "InternalServerError", "Internal server error"),
    "kms": ErrorShape(500, "KMSInternalException", "An internal error occurred."),
    "sqs": ErrorShape(500, _SQS + "InternalFailure", "An internal error occurred."),
}
KMS_REFUSALS = {
    KMS_ACCESS_DENIED: ErrorShape(
        400, "AccessDeniedException", "User is not authorized to perform this operation."
    ),
    KMS_DISABLED: ErrorShape(400, "DisabledException", "The key is disabled."),
    KMS_INVALID_STATE: ErrorShape(400, "KMSInvalidStateException", "The key is pending deletion."),
}


def error_shape(service: str, kind: str, rng: random.Random) -> ErrorShape:
    if kind == THROTTLE:
        return THROTTLE_ERRORS[service]
    if kind == ERROR5XX:
        return INTERNAL_ERRORS[service] if rng.random() < 0.5 else _UNAVAILABLE
    return KMS_REFUSALS[kind]


def _error_response(service: str, shape: ErrorShape) -> web.Response:
    headers = {
        "Content-Type": _CONTENT_TYPES[service],
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    if shape.query_error:
        headers["x-amzn-query-error"] = shape.query_error
    body = json.dumps({"__type": shape.type, "message": shape.message})
    return web.Response(status=shape.status, body=body.encode(), headers=headers)


# --- service and operation detection ------------------------------------------------------------


def detect(headers: Mapping[str, str], query: Mapping[str, str], body: bytes) -> tuple[str, str]:
    """(service, operation) of an AWS request; service "" if it is not one of SERVICES."""
    target = headers.get("X-Amz-Target", "")
    for prefix, service in _TARGETS:
        if target.startswith(prefix):
            return service, target[len(prefix) :]
    service = _credential_scope(headers.get("Authorization", ""))
    if service not in SERVICES:
        return "", ""
    action = query.get("Action")
    if action is None and "x-www-form-urlencoded" in headers.get("Content-Type", ""):
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        action = form.get("Action", [None])[0]
    return service, action or "unknown"


# KMS encryption context entries recorded with their value: those naming a table or a purpose.
# Others (the user id the encryption SDK adds, a sealed payload's public key) by key only.
_CONTEXT_VALUES = frozenset({"*aws-kms-table*", "purpose", "table", "userstore:purpose"})


def named_resources(body: bytes) -> frozenset[str]:
    """What a JSON-protocol request names, for IAM checks: `table:T`, `index:T/I`, `queue:Q`
    (a name or URL), `key:K`, `stream:ARN`, `context:K=V` or `context:K`. Empty otherwise.
    """
    try:
        request = json.loads(body) if body else {}
    except ValueError:
        return frozenset()
    if not isinstance(request, dict):
        return frozenset()
    found: set[str] = set()
    tables = list(request.get("RequestItems", {}))
    if isinstance(request.get("TableName"), str):
        tables.append(request["TableName"])
    found |= {f"table:{t}" for t in tables}
    if isinstance(request.get("IndexName"), str) and tables:
        found.add(f"index:{tables[0]}/{request['IndexName']}")
    for key, kind in (("QueueUrl", "queue"), ("QueueName", "queue"), ("KeyId", "key")):
        if isinstance(request.get(key), str):
            found.add(f"{kind}:{request[key]}")
    if isinstance(request.get("StreamArn"), str):
        found.add(f"stream:{request['StreamArn']}")
    context = request.get("EncryptionContext")
    if isinstance(context, dict):
        found |= {
            f"context:{k}={v}" if k in _CONTEXT_VALUES else f"context:{k}"
            for k, v in context.items()
        }
    return frozenset(found)


def _credential_scope(authorization: str) -> str:
    # AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-2/sqs/aws4_request, SignedHeaders=...
    marker = "Credential="
    start = authorization.find(marker)
    if start < 0:
        return ""
    scope = authorization[start + len(marker) :].split(",", 1)[0].strip().split("/")
    return scope[3] if len(scope) >= 5 else ""


# --- the proxy ----------------------------------------------------------------------------------


class FaultProxy:
    """The proxy, in this process and event loop. `async with FaultProxy(...) as url`.

    Only call it from the loop it runs on; a synchronous client (boto3) in the same thread would
    block that loop: run it with `asyncio.to_thread`, or use `fault_proxy_process`. That includes
    the worker's `components()` in cached key mode, which builds the SDK's MetaStore (a boto3
    DescribeTable) on the event loop: with an in-process proxy on that loop it deadlocks.
    """

    def __init__(
        self,
        upstream: str,
        rules: FaultRules | Mapping[str, Any] | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._upstream = upstream.rstrip("/")
        self._rules = FaultRules.coerce(rules)
        self._rng = random.Random(self._rules.seed)
        self._spent: Counter[str] = Counter()  # faults injected per service, for max_faults
        self._stats = _Stats()
        self._host = host
        self._port = port
        self._url: str | None = None
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the proxy is not running")
        return self._url

    @property
    def rules(self) -> FaultRules:
        return self._rules

    def set_rules(self, rules: FaultRules | Mapping[str, Any] | str | None) -> FaultRules:
        """Replace the rules (and reseed the RNG with their seed)."""
        self._rules = FaultRules.coerce(rules)
        self._rng = random.Random(self._rules.seed)
        self._spent = Counter()
        return self._rules

    def stats(self) -> ProxyStats:
        return ProxyStats(self._stats.to_dict())

    def reset_stats(self) -> None:
        self._stats = _Stats()

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.setblocking(False)
        port = int(sock.getsockname()[1])
        server = web.Server(self._handle, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._url = f"http://{host}:{port}"
        return self._url

    async def close(self) -> None:
        self._closing.set()  # wakes held ("timeout") requests
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._url = None

    async def __aenter__(self) -> str:
        try:
            return await self.start()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- request handling --

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await self._control(request)
        body = await request.content.read()
        service, operation = detect(request.headers, request.query, body)
        if not service:
            self._stats.passthrough += 1
            return await self._pass(request, body)
        self._stats.call(service, operation, named_resources(body))
        rules = self._rules
        service_rules = rules.for_service(service)
        latency = rules.latency_ms
        if service_rules is not None and service_rules.latency_ms is not None:
            latency = service_rules.latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        kind = self._decide(service, operation, service_rules)
        if kind is None:
            response = await self._pass(request, body)
            if "x-fault-proxy" not in response.headers:
                self._stats.forwarded(service, operation)
            return response
        self._stats.injected(service, operation, kind)
        if kind == TIMEOUT:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rules.timeout_hold_s):
                    await self._closing.wait()
            return _drop(request)
        if kind == DROP_BEFORE:
            return _drop(request)
        if kind == DROP_AFTER:
            response = await self._pass(request, body)
            if "x-fault-proxy" not in response.headers:
                self._stats.forwarded(service, operation)
            return _drop(request)
        return _error_response(service, error_shape(service, kind, self._rng))

    def _decide(self, service: str, operation: str, rules: ServiceRules | None) -> str | None:
        if rules is None:
            return None
        if rules.operations is not None and operation not in rules.operations:
            return None
        kind = rules.outage if rules.outage is not None else self._draw(rules.rates)
        if kind is None or (kind in KMS_ONLY_KINDS and service != "kms"):
            return None
        if rules.max_faults is not None:
            if self._spent[service] >= rules.max_faults:
                return None
            self._spent[service] += 1
        return kind

    def _draw(self, rates: Mapping[str, float]) -> str | None:
        """One draw per call that has rates, matched against them in KINDS order."""
        if not rates:
            return None
        draw = self._rng.random()
        bound = 0.0
        for kind in KINDS:
            bound += rates.get(kind, 0.0)
            if draw < bound:
                return kind
        return None

    async def _pass(self, request: web.BaseRequest, body: bytes) -> web.Response:
        """Forward to upstream, answer what it answered (hop-by-hop headers dropped)."""
        assert self._session is not None
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP
        )
        url = URL(self._upstream + request.raw_path, encoded=True)
        data = body if body or request.method not in ("GET", "HEAD") else None
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            ) as upstream:
                payload = await upstream.read()
                answer = CIMultiDict(
                    (name, value)
                    for name, value in upstream.headers.items()
                    if name.lower() not in _HOP_BY_HOP
                )
                return web.Response(
                    status=upstream.status, reason=upstream.reason, body=payload, headers=answer
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._stats.upstream_errors += 1
            text = json.dumps({"__type": "BadGateway", "message": f"upstream: {exc!r}"})
            return web.Response(
                status=502,
                body=text.encode(),
                headers={"Content-Type": "application/json", "x-fault-proxy": "upstream-error"},
            )

    async def _control(self, request: web.BaseRequest) -> web.StreamResponse:
        name = request.path[len(CONTROL_PREFIX) :].strip("/")
        if name == "stats" and request.method == "GET":
            return web.json_response(self._stats.to_dict())
        if name == "stats" and request.method == "DELETE":
            self.reset_stats()
            return web.Response(status=204)
        if name == "rules" and request.method == "GET":
            return web.json_response(self._rules.to_dict())
        if name == "rules" and request.method in ("PUT", "POST"):
            try:
                rules = self.set_rules(json.loads(await request.content.read() or b"{}"))
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response(rules.to_dict())
        return web.json_response({"error": f"no such control: {request.method} {name}"}, status=404)


def _drop(request: web.BaseRequest) -> web.StreamResponse:
    """Close the connection without an answer (a FIN: the request body was read already)."""
    transport = request.transport
    if transport is not None:
        transport.close()
    # Never sent: aiohttp finds the transport closing and ends the connection quietly.
    return web.Response(status=204)


# --- the separate process -----------------------------------------------------------------------


class ProxyControl:
    """Synchronous control of a running proxy (any mode), over HTTP with urllib."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s
        # Never through an HTTP(S)_PROXY from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method: str, name: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}{CONTROL_PREFIX}{name}",
            data=body,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=self._timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            exc.close()
            if exc.code == 400:
                raise ValueError(json.loads(detail).get("error", detail)) from None
            raise
        return json.loads(text) if text else None

    def set_rules(self, rules: FaultRules | Mapping[str, Any] | str | None) -> FaultRules:
        body = FaultRules.coerce(rules).to_json().encode()
        return FaultRules.from_dict(self._request("PUT", "rules", body))

    def rules(self) -> FaultRules:
        return FaultRules.from_dict(self._request("GET", "rules"))

    def stats(self) -> ProxyStats:
        return ProxyStats(self._request("GET", "stats"))

    def reset_stats(self) -> None:
        self._request("DELETE", "stats")


_ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def fault_proxy_process(
    upstream: str,
    rules: FaultRules | Mapping[str, Any] | str | None = None,
    *,
    port: int = 0,
    startup_timeout_s: float = 20.0,
) -> Iterator[tuple[str, ProxyControl]]:
    """Run the proxy as its own process; yields its URL and a control client."""
    rules_json = FaultRules.coerce(rules).to_json()
    pythonpath = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.faults.proxy",
            "--upstream",
            upstream,
            "--port",
            str(port),
            "--rules",
            rules_json,
        ],
        cwd=_ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        url = _first_line(proc, startup_timeout_s)
        yield url, ProxyControl(url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _first_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError("the fault proxy did not print its URL in time")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the fault proxy exited early (code {proc.wait()})")
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode().strip()


async def _serve(upstream: str, host: str, port: int, rules: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with FaultProxy(upstream, rules, host=host, port=port) as url:
        print(url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults.proxy", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--upstream", required=True, help="the emulator's URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--rules", default="{}", help="JSON rules, or @FILE")
    args = parser.parse_args(argv)
    rules = str(args.rules)
    if rules.startswith("@"):
        rules = Path(rules[1:]).read_text()
    FaultRules.coerce(rules)  # fail before binding the port
    asyncio.run(_serve(args.upstream, args.host, args.port, rules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
