"""events.sealing against moto's KMS: data-key caching both ways, and what is refused."""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aws_encryption_sdk
import boto3
import pytest
from aws_encryption_sdk.identifiers import CommitmentPolicy
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
from aws_encryption_sdk.key_providers.kms import KMSMasterKey
from botocore.config import Config

from tests.harness.emulator import free_port
from userstore.events import InvalidEvent, SealedEvent, parse_event, sealing
from userstore.events.envelopes import sealed_plaintext
from userstore.events.publisher import seal_body
from userstore.events.sealing import (
    PayloadOpener,
    PayloadSealer,
    SealingUnavailable,
    encryption_context,
)

SECRET = "Ottoline-Hidden-31"
OCCURRED_AT = datetime(2026, 11, 28, 10, tzinfo=UTC)
MISMATCH = (
    "sealed: encryption context does not match this event's event_id, user_id, type and occurred_at"
)
UNDATED = (
    "sealed: encryption context has no occurred_at (the 0.4 contract):"
    " the publisher must seal and publish the event again with a current version"
)


def kms_client(endpoint: str) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name="eu-west-2",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def counted(client: Any) -> Counter[str]:
    calls: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.kms.*", hook)
    return calls


def event(n: int, user: str = "u-1", occurred_at: str = "2026-11-28T10:00:00Z") -> Any:
    return parse_event(
        json.dumps(
            {
                "type": "user.created",
                "event_id": f"e-{n}",
                "user_id": user,
                "occurred_at": occurred_at,
                "data": {"given_name": SECRET, "attributes": {"n": n}},
            }
        )
    )


def test_one_data_key_serves_many_events_both_ways(moto_endpoint: str) -> None:
    publisher_kms, worker_kms = kms_client(moto_endpoint), kms_client(moto_endpoint)
    key = publisher_kms.create_key()["KeyMetadata"]["Arn"]
    sent, received = counted(publisher_kms), counted(worker_kms)
    sealer = PayloadSealer(publisher_kms, key, max_messages=40)
    opener = PayloadOpener(worker_kms, key)
    envelopes = [sealer.seal(event(n, user=f"u-{n % 7}")) for n in range(100)]
    for n, envelope in enumerate(envelopes):
        assert SECRET not in envelope.model_dump_json()
        assert opener.open(envelope) == event(n, user=f"u-{n % 7}")
    # 40 messages per data key: 3 keys for 100 events, each unwrapped once by the worker.
    assert sent["GenerateDataKey"] == 3
    assert received["Decrypt"] == 3


def test_context_mismatch_and_foreign_key_are_invalid(moto_endpoint: str) -> None:
    kms = kms_client(moto_endpoint)
    key, other_key = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    envelope = PayloadSealer(kms, key).seal(event(1))
    opener = PayloadOpener(kms, key)
    for moved in (
        envelope.model_copy(update={"event_id": "e-2"}),
        envelope.model_copy(update={"user_id": "u-2"}),
        # Re-dated so that it wins (or loses) against the user's other changes.
        envelope.model_copy(update={"occurred_at": OCCURRED_AT + timedelta(days=1)}),
        envelope.model_copy(update={"occurred_at": OCCURRED_AT + timedelta(microseconds=1)}),
    ):
        with pytest.raises(InvalidEvent) as caught:
            opener.open(moved)
        assert caught.value.reason == MISMATCH
    with pytest.raises(InvalidEvent, match="cannot be opened"):
        PayloadOpener(kms, other_key).open(envelope)


def test_unreachable_kms_is_retryable_not_invalid(moto_endpoint: str) -> None:
    kms = kms_client(moto_endpoint)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    envelope = PayloadSealer(kms, key).seal(event(1))
    down = kms_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SealingUnavailable) as caught:
        PayloadOpener(down, key).open(envelope)
    assert SECRET not in str(caught.value)
    with pytest.raises(SealingUnavailable):
        PayloadSealer(down, key).seal(event(2))


def test_a_publisher_sealing_the_plain_way_is_opened_too(moto_endpoint: str) -> None:
    """Another language's aws-encryption-sdk, no caching trick: the whole context goes to KMS."""
    kms = kms_client(moto_endpoint)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    plain = event(5)
    ciphertext, _ = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    ).encrypt(
        source=sealed_plaintext(plain),
        encryption_context=encryption_context("e-5", "u-1", "user.created", OCCURRED_AT),
        key_provider=KMSMasterKey(key_id=key, client=kms),
    )
    fields = plain.model_dump(mode="json", exclude={"data"}, exclude_none=True)
    envelope = SealedEvent.model_validate(
        {**fields, "sealed": base64.b64encode(ciphertext).decode()}
    )
    assert PayloadOpener(kms, key).open(envelope) == plain
    for moved in (
        envelope.model_copy(update={"event_id": "e-6"}),
        envelope.model_copy(update={"occurred_at": OCCURRED_AT - timedelta(seconds=1)}),
    ):
        with pytest.raises(InvalidEvent) as caught:
            PayloadOpener(kms, key).open(moved)
        assert caught.value.reason == MISMATCH


def test_the_header_binds_the_canonical_occurred_at_and_any_offset_round_trips(
    moto_endpoint: str,
) -> None:
    kms = kms_client(moto_endpoint)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    sealer, opener = PayloadSealer(kms, key), PayloadOpener(kms, key)
    # The same instant written with an offset and a fraction: one canonical form.
    plain = event(7, occurred_at="2026-11-28T11:00:00.5+01:00")
    envelope = sealer.seal(plain)
    header, _ = deserialize_header(io.BytesIO(base64.b64decode(envelope.sealed)))
    assert header.encryption_context["occurred_at"] == "2026-11-28T10:00:00.500000Z"
    assert opener.open(envelope) == plain
    # What a publisher sends is re-read from JSON: the envelope keeps the instant, not the text.
    reread = SealedEvent.model_validate_json(seal_body(envelope))
    assert opener.open(reread) == plain


def test_a_payload_sealed_under_the_0_4_contract_is_refused_with_what_to_do(
    moto_endpoint: str,
) -> None:
    """0.4 contexts have no occurred_at: accepting them would leave re-dating open."""
    kms = kms_client(moto_endpoint)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    plain = event(8)
    undated = {
        k: v
        for k, v in encryption_context("e-8", "u-1", "user.created", OCCURRED_AT).items()
        if k != "occurred_at"
    }
    fields = plain.model_dump(mode="json", exclude={"data"}, exclude_none=True)
    sealer = PayloadSealer(kms, key)
    ciphertexts = [
        # The 0.4 Python publisher (data key cached per purpose) ...
        sealing._CLIENT.encrypt(
            source=sealed_plaintext(plain),
            encryption_context=undated,
            materials_manager=sealer._materials,
        )[0],
        # ... and another language's SDK sealing the plain way.
        aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
        ).encrypt(
            source=sealed_plaintext(plain),
            encryption_context=undated,
            key_provider=KMSMasterKey(key_id=key, client=kms),
        )[0],
    ]
    opener = PayloadOpener(kms, key)
    for ciphertext in ciphertexts:
        envelope = SealedEvent.model_validate(
            {**fields, "sealed": base64.b64encode(ciphertext).decode()}
        )
        with pytest.raises(InvalidEvent) as caught:
            opener.open(envelope)
        assert caught.value.reason == UNDATED
        assert (caught.value.event_id, caught.value.event_type) == ("e-8", "user.created")
        # Moved to another event as well: the plain mismatch, not "publish again".
        with pytest.raises(InvalidEvent) as caught:
            opener.open(envelope.model_copy(update={"user_id": "u-2"}))
        assert caught.value.reason == MISMATCH


def test_every_flipped_bit_or_truncation_is_refused(moto_endpoint: str) -> None:
    kms = kms_client(moto_endpoint)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    envelope = PayloadSealer(kms, key).seal(event(1))
    opener = PayloadOpener(kms, key)
    raw = base64.b64decode(envelope.sealed)
    altered = [raw[:cut] for cut in range(1, len(raw), 23)]
    for index in range(0, len(raw), 5):
        flipped = bytearray(raw)
        flipped[index] ^= 0x01
        altered.append(bytes(flipped))
    outcomes: Counter[str] = Counter()
    for ciphertext in altered:
        candidate = envelope.model_copy(update={"sealed": base64.b64encode(ciphertext).decode()})
        try:
            opener.open(candidate)
        except InvalidEvent as exc:
            outcomes[exc.reason] += 1
        except SealingUnavailable as exc:
            # moto answers AccessDenied for a data-key blob altered into another key id (AWS:
            # InvalidCiphertext). Retried, then dead-lettered with the reason: never opened.
            outcomes[f"retry: {exc.reason}"] += 1
    assert sum(outcomes.values()) == len(altered)
    assert set(outcomes) <= {
        "sealed: cannot be opened (not sealed for this worker's key, or altered)",
        "retry: key service refused to decrypt (AccessDeniedException)",
    }
