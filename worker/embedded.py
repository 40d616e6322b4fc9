"""An in-process moto server on a free loopback port: the emulator behind `--embedded`.

moto's threaded server checks a write's condition and then writes, with nothing in between to
stop a concurrent request: two racing `rev = :rev` puts can both succeed, which DynamoDB never
allows, and a worker would lose an update that AWS would have refused. So DynamoDB and DynamoDB
Streams requests are served one at a time (`SerializeDynamoDB`); SQS long polls still overlap.
The test harness's moto server (tests/harness/atomic_moto.py) uses the same wrapper.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

_SERIALIZED_TARGETS = ("DynamoDB_20120810.", "DynamoDBStreams_20120810.")


class SerializeDynamoDB:
    """WSGI middleware: one DynamoDB (or DynamoDB Streams) request at a time."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(_SERIALIZED_TARGETS):
            with self._lock:
                # Materialize the body inside the lock: the write happens while it is produced.
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)


@contextmanager
def embedded_moto() -> Iterator[str]:
    """Start moto's server in a thread on a free port; yield its endpoint URL; stop it on exit."""
    try:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded emulator needs moto: pip install 'userstore[embedded]'"
        ) from exc
    # The emulator accepts any credentials; supply dummy ones only if none are configured.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "embedded")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "embedded")
    app = SerializeDynamoDB(DomainDispatcherApplication(create_backend_app))
    # Port 0: the system picks a free port as it binds (no window for another process to take it).
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="embedded-moto", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
