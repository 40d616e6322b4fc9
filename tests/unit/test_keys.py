"""Key references, the sealing snapshot, the set-aside of failing stream records, the inventory's
verdict: pure logic, no AWS (a KMS client that never leaves the process)."""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from dynamodb_encryption_sdk.structures import EncryptionContext

from userstore.worker.crypto import KmsKeys
from userstore.worker.errors import KeyUnavailable
from userstore.worker.inventory import Inventory, describe
from userstore.worker.keyref import InvalidKeyRef, KeyKind, KeyRef
from userstore.worker.metrics import Metrics
from userstore.worker.rotation_duties import SetAside
from userstore.worker.streams import StreamRecord

A = "arn:aws:kms:eu-west-2:123456789012:key/11111111-1111-1111-1111-111111111111"
B = "arn:aws:kms:eu-west-2:123456789012:key/22222222-2222-2222-2222-222222222222"
OTHER_ACCOUNT = "arn:aws:kms:eu-west-2:999999999999:key/33333333-3333-3333-3333-333333333333"


def test_key_refs_parse_once_and_compare_by_value() -> None:
    ref = KeyRef.parse(f"kms:{A}")
    assert ref == KeyRef.kms(A) and ref.kind is KeyKind.KMS and ref.arn == A
    assert str(ref) == f"kms:{A}"
    assert ref.account_region == ("123456789012", "eu-west-2")
    cached = KeyRef.parse("materials:userstore#12")
    assert cached == KeyRef.materials("userstore", 12) and str(cached) == "materials:userstore#12"
    assert len({ref, KeyRef.parse(str(ref)), cached}) == 2


@pytest.mark.parametrize(
    "text",
    [
        "",
        A,  # no prefix
        "kms:alias/userstore",  # an alias names no key
        f"kms:{A} ",
        "kms:arn:aws:kms:eu-west-2:123:key/x",  # account of the wrong length
        "materials:userstore",
        "materials:userstore#-1",
        "materials:userstore#01",
        "materials:#3",
        "aws:kms:whatever",
    ],
)
def test_anything_else_is_no_key_ref(text: str) -> None:
    with pytest.raises(InvalidKeyRef) as caught:
        KeyRef.parse(text)
    assert text.strip() == "" or text not in str(caught.value)  # never echoes the text


def _offline_kms(on_generate: Any) -> Any:
    """A real boto3 KMS client whose GenerateDataKey is answered in-process (nothing sent)."""
    client = boto3.session.Session().client(
        "kms", region_name="eu-west-2", aws_access_key_id="x", aws_secret_access_key="y"
    )

    def answer(params: dict[str, Any], **_: Any) -> Any:
        key_id = json.loads(params["body"])["KeyId"]
        on_generate(key_id)
        body = {"KeyId": key_id, "Plaintext": os.urandom(32), "CiphertextBlob": b"wrapped"}
        return AWSResponse("https://kms", 200, {}, None), body

    client.meta.events.register("before-call.kms.GenerateDataKey", answer)
    return client


def test_a_rotation_during_generate_data_key_cannot_mislabel_the_record() -> None:
    """The key_ref comes from the same snapshot as the materials: it names the key that wrapped
    the data key, even when `activate` lands while KMS is answering."""
    used: list[str] = []
    keys: KmsKeys

    def rotate_meanwhile(key_id: str) -> None:
        used.append(key_id)
        keys.activate(KeyRef.kms(B))

    keys = KmsKeys(KeyRef.kms(A), _offline_kms(rotate_meanwhile))
    context = EncryptionContext(
        table_name="users", partition_key_name="user_id", attributes={"user_id": {"S": "u"}}
    )
    _materials, key_ref = keys.encryption_materials(context)
    assert used == [A]
    assert key_ref == KeyRef.kms(A)
    # and the next record is sealed under the new key, named as such
    _materials, key_ref = keys.encryption_materials(context)
    assert used == [A, B] and key_ref == KeyRef.kms(B)


def _stream_record(sequence: str) -> StreamRecord:
    raw = {
        "eventName": "MODIFY",
        "dynamodb": {
            "Keys": {"user_id": {"S": "u"}},
            "SequenceNumber": sequence,
            "ApproximateCreationDateTime": 0,
        },
    }
    return StreamRecord.from_raw(raw, shard_id="shard-1")


async def test_a_stream_record_that_keeps_failing_is_set_aside_after_bounded_tries() -> None:
    metrics = Metrics()
    set_aside = SetAside(3, metrics)
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise KeyUnavailable("key service refused Decrypt (DisabledException)")

    record = _stream_record("100")
    for _ in range(2):
        with pytest.raises(KeyUnavailable):
            await set_aside.attempt(record, failing)
    await set_aside.attempt(record, failing)  # the third try gives up: the shard moves on
    assert calls == 3
    assert metrics.count("userstore_stream_records_set_aside") == 1
    # another record starts with a fresh count; a success clears it
    other = _stream_record("101")
    with pytest.raises(KeyUnavailable):
        await set_aside.attempt(other, failing)
    done: list[int] = []

    async def ok() -> None:
        done.append(1)

    await set_aside.attempt(other, ok)
    assert done == [1]
    with pytest.raises(KeyUnavailable):
        await set_aside.attempt(other, failing)  # counted from zero again


def _inventory(**overrides: Any) -> Inventory:
    fields: dict[str, Any] = {
        "active_key": KeyRef.kms(B),
        "active_index_version": 2,
        "records_by_key": {f"kms:{B}": 10},
        "controls_by_key": {f"kms:{B}": 2},
        "emails_by_index_version": {2: 7},
        "tombstones": 1,
        "index_wrapped_under": {1: KeyRef.kms(B), 2: KeyRef.kms(B)},
        "active_kms_key": KeyRef.kms(B),
        "history": (KeyRef.kms(A), KeyRef.kms(B)),
    }
    return Inventory(**(fields | overrides))


def test_an_old_key_can_be_retired_only_when_nothing_needs_it() -> None:
    done = _inventory()
    assert done.old_keys() == [KeyRef.kms(A)]
    assert done.retirable()
    assert "old keys can be retired" in describe(done)
    assert done.unused_index_versions() == [1]

    for blocker, words in [
        ({"records_by_key": {f"kms:{A}": 1, f"kms:{B}": 9}}, "1 user records sealed under it"),
        ({"controls_by_key": {f"kms:{A}": 1, f"kms:{B}": 1}}, "1 control records sealed"),
        ({"index_wrapped_under": {2: KeyRef.kms(A)}}, "blind-index key version 2 wrapped"),
    ]:
        inv = _inventory(**blocker)
        assert not inv.retirable()
        text = "\n".join(describe(inv))
        assert f"old key kms:{A} is still needed" in text and words in text
        assert "can NOT be retired" in text


def test_cached_mode_counts_material_versions_by_the_kms_key_that_wraps_them() -> None:
    v = [KeyRef.materials("userstore", n) for n in range(3)]
    inv = _inventory(
        active_key=v[2],
        records_by_key={str(v[2]): 5},
        controls_by_key={str(v[2]): 2},
        material_keys={0: KeyRef.kms(A), 1: KeyRef.kms(A), 2: KeyRef.kms(B)},
        history=(v[0], v[1], v[2]),
    )
    assert inv.retirable()  # versions 0 and 1 are wrapped under A, but nothing uses them
    assert set(inv.old_keys()) == {v[0], v[1], KeyRef.kms(A)}
    still = _inventory(
        active_key=v[2],
        records_by_key={str(v[1]): 1, str(v[2]): 4},
        controls_by_key={str(v[2]): 2},
        material_keys={0: KeyRef.kms(A), 1: KeyRef.kms(A), 2: KeyRef.kms(B)},
    )
    assert not still.retirable()
    assert still.uses(KeyRef.kms(A)) == ["material version 1 wrapped under it, in use"]
    assert KeyRef.kms(OTHER_ACCOUNT) not in still.old_keys()
