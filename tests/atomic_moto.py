"""moto's server with DynamoDB requests served one at a time, so conditional writes are atomic.

moto's threaded server checks a write's condition and then writes, with nothing in between to
stop a concurrent request: two racing `rev = :rev` puts can both succeed, which DynamoDB never
allows. Tests of concurrent writers would then see lost updates that AWS would not produce. This
launcher runs the same moto application, threaded as usual (SQS long polls still overlap), with
one lock around DynamoDB and DynamoDB Streams requests. Run: python -m tests.atomic_moto -p PORT
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

_SERIALIZED_TARGETS = ("DynamoDB_20120810.", "DynamoDBStreams_20120810.")


class SerializeDynamoDB:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(_SERIALIZED_TARGETS):
            with self._lock:
                # Materialize the body inside the lock: the write happens while it is produced.
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        SerializeDynamoDB(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
