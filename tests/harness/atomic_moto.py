"""moto's server with two small, documented fixes that make it answer as AWS does.

1. DynamoDB requests are served one at a time, so conditional writes are atomic.
2. KMS enforces key state and named keys (`enforce_kms_key_state`).

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    enforce_kms_key_state()
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
