"""The embedded emulator's DynamoDB requests are served one at a time (conditional writes atomic,
as on AWS); other services' requests still overlap (SQS long polls)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from userstore.worker.embedded import SerializeDynamoDB


class _SlowApp:
    """A WSGI app that notes how many requests it serves at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.05)  # a condition checked, then the write: room for another request
        with self._lock:
            self.inside -= 1
        return [b"{}"]


def _serve_together(target: str, requests: int = 4) -> int:
    inner = _SlowApp()
    app = SerializeDynamoDB(inner)
    start = threading.Barrier(requests)

    def request() -> None:
        start.wait()
        app({"HTTP_X_AMZ_TARGET": target}, lambda *_: None)

    threads = [threading.Thread(target=request) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return inner.most


def test_dynamodb_requests_are_served_one_at_a_time() -> None:
    assert _serve_together("DynamoDB_20120810.PutItem") == 1
    assert _serve_together("DynamoDBStreams_20120810.GetRecords") == 1


def test_other_services_requests_overlap() -> None:
    assert _serve_together("AmazonSQS.ReceiveMessage") > 1
