"""moto's server with small, documented fixes: two make it answer as AWS does, one makes it
fast enough to measure a worker with.

1. DynamoDB requests are served one at a time, so conditional writes are atomic.
2. KMS enforces key state and named keys (`enforce_kms_key_state`).
3. SQS counts queued messages with one clock reading per count (`count_queues_in_one_pass`).

moto's threaded server checks a write's condition and then writes, with nothing in between to
stop a concurrent request: two racing `rev = :rev` puts can both succeed, which DynamoDB never
allows. Tests of concurrent writers would then see lost updates that AWS would not produce. This
launcher runs the same moto application, threaded as usual (SQS long polls still overlap), with
one lock around DynamoDB and DynamoDB Streams requests (the wrapper the embedded emulator uses,
userstore.worker.embedded).

moto's KMS still encrypts and decrypts under a disabled key or one pending deletion, and answers
a Decrypt that names another key than the ciphertext's with AccessDeniedException. AWS refuses
the first with DisabledException / KMSInvalidStateException and the second with
IncorrectKeyException; the key-retirement tests depend on both, so they are patched in here.

Run: python -m tests.harness.atomic_moto -p PORT
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

from userstore.worker.embedded import SerializeDynamoDB


def enforce_kms_key_state() -> None:
    """Patch moto's KMS backend: refuse cryptographic use of keys that are not Enabled, and
    answer IncorrectKeyException for a Decrypt naming another key than the ciphertext's."""
    from moto.core.exceptions import JsonRESTError
    from moto.kms import models, utils

    def refusal(code: str, message: str) -> JsonRESTError:
        error = JsonRESTError(code, message)
        error.code = 400
        return error

    def usable(key: Any) -> None:
        if key.key_state == "Disabled":
            raise refusal("DisabledException", f"{key.arn} is disabled.")
        if key.key_state != "Enabled":
            raise refusal("KMSInvalidStateException", f"{key.arn} is {key.key_state}.")

    original_encrypt = models.KmsBackend.encrypt

    def encrypt(self: Any, key_id: str, plaintext: bytes, encryption_context: Any) -> Any:
        usable(self.keys[self.any_id_to_key_id(key_id)])
        return original_encrypt(self, key_id, plaintext, encryption_context)

    def decrypt(
        self: Any, ciphertext_blob: bytes, encryption_context: Any, key_id: str | None = None
    ) -> tuple[bytes, str]:
        plaintext, actual = utils.decrypt(
            master_keys=self.keys,
            ciphertext_blob=ciphertext_blob,
            encryption_context=encryption_context,
        )
        if key_id is not None and self.any_id_to_key_id(key_id) != actual:
            raise refusal("IncorrectKeyException", "The key ID in the request does not match.")
        usable(self.keys[actual])
        return plaintext, self.keys[actual].arn

    models.KmsBackend.encrypt = encrypt  # generate_data_key and re_encrypt call these two
    models.KmsBackend.decrypt = decrypt


def count_queues_in_one_pass() -> None:
    """Patch moto's SQS queue counts: one clock reading per count, not one per message.

    moto reads the clock (through datetime) once per queued message for each of its counts, and
    computes every count on every SendMessage (to read ContentBasedDeduplication) and for every
    message a receive hands out. With a few hundred messages queued that is most of the
    emulator's CPU: sends slow down, a worker that fell behind falls further, and a benchmark
    measures moto. Same answers (each message compared with one instant), far cheaper.
    """
    from moto.core.utils import unix_time_millis
    from moto.sqs import models

    def messages(self: Any) -> list[Any]:
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def not_visible(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if not now > m.visible_at)

    def delayed(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    models.Queue.messages = property(messages)  # type: ignore[method-assign,assignment]
    models.Queue.approximate_number_of_messages_not_visible = property(not_visible)  # type: ignore[method-assign,assignment]
    models.Queue.approximate_number_of_messages_delayed = property(delayed)  # type: ignore[method-assign,assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    enforce_kms_key_state()
    count_queues_in_one_pass()
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
