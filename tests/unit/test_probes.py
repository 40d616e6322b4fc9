"""The operations endpoint over real HTTP on loopback: readiness states, liveness, metrics."""

from __future__ import annotations

import aiohttp

from userstore.worker.metrics import Metrics
from userstore.worker.probes import Readiness, serve


async def test_readiness_follows_start_receiving_and_draining() -> None:
    metrics = Metrics()
    receiving = False
    readiness = Readiness(receiving=lambda: receiving)
    async with serve(metrics, readiness, "127.0.0.1", 0) as port, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"

        async def get(path: str) -> tuple[int, str]:
            async with http.get(base + path) as response:
                return response.status, await response.text()

        assert (await get("/healthz"))[0] == 200
        assert await get("/readyz") == (503, '{"status": "starting"}')
        readiness.started = True
        assert await get("/readyz") == (503, '{"status": "not receiving"}')
        receiving = True
        assert await get("/readyz") == (200, '{"status": "ready"}')
        status, page = await get("/metrics")
        assert status == 200 and "userstore_ready 1.0" in page
        readiness.stopping.set()
        assert await get("/readyz") == (503, '{"status": "draining"}')
        assert "userstore_ready 0.0" in (await get("/metrics"))[1]
        assert (await get("/healthz"))[0] == 200
        assert (await get("/nothing"))[0] == 404


async def test_aws_errors_are_labelled_by_code_and_odd_codes_are_not_labels() -> None:
    metrics = Metrics()

    class Events:
        def __init__(self) -> None:
            self.handlers: dict[str, object] = {}

        def register(self, name: str, handler: object) -> None:
            self.handlers[name] = handler

    class Client:
        class meta:
            events = Events()

    client = Client()
    metrics.instrument(client, "encryption_sdk")
    answered = client.meta.events.handlers["after-call"]
    failed = client.meta.events.handlers["after-call-error"]

    class Response:
        def __init__(self, status: int) -> None:
            self.status_code = status

    answered(event_name="after-call.kms.Decrypt", http_response=Response(200), parsed={})
    answered(
        event_name="after-call.kms.Decrypt",
        http_response=Response(400),
        parsed={"Error": {"Code": "<html>ada@example.org</html>"}},
    )
    failed(event_name="after-call-error.sqs.ReceiveMessage", exception=TimeoutError())
    assert (
        metrics.count(
            "userstore_kms_requests", {"operation": "Decrypt", "caller": "encryption_sdk"}
        )
        == 2
    )
    assert (
        metrics.count(
            "userstore_aws_errors", {"service": "kms", "operation": "Decrypt", "error": "other"}
        )
        == 1
    )
    assert (
        metrics.count(
            "userstore_aws_errors",
            {"service": "sqs", "operation": "ReceiveMessage", "error": "TimeoutError"},
        )
        == 1
    )
