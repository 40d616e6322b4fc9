"""The key lifecycle against a moto server that enforces KMS key state
(tests/harness/atomic_moto.py): rotation moves every ciphertext, the old key really retires, and
tampering is never an outage."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.harness.counting import Calls, count_calls, event
from userstore.worker import profile
from userstore.worker.app import Components, components
from userstore.worker.control import INDEX_KEYS
from userstore.worker.crypto import ItemCipher, KmsKeys
from userstore.worker.errors import ControlRolledBack, RecordTampered
from userstore.worker.follow import follow_authority, follow_control
from userstore.worker.inventory import inventory
from userstore.worker.keyref import KeyRef
from userstore.worker.record import from_item
from userstore.worker.rotation import rotate_index_key, rotate_key
from userstore.worker.search import find_by_email
from userstore.worker.settings import KeyMode, Settings
from userstore.worker.sweep import run_sweep

NOW = datetime.now(UTC).replace(microsecond=0)


def at(seconds: int) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat()


def uid() -> str:
    return f"urn:fdc:gov.uk:2022:life-{uuid.uuid4().hex[:10]}"


async def load_users(parts: Components, count: int) -> dict[str, str]:
    users = {}
    for n in range(count):
        user = uid()
        email = f"life.{n}.{uuid.uuid4().hex[:6]}@example.org"
        await parts.handler.handle(
            event(f"c-{user}", "user.created", user, at(0), {"email": email, "given_name": "G"})
        )
        users[user] = email
    return users


async def read_view(parts: Components, user: str) -> Any:
    record = await parts.store.get(user)
    assert record is not None
    return profile.view(from_item(await parts.cipher.open(record.item)))


async def new_kms_key(parts: Components) -> str:
    created = await parts.clients.kms.create_key(Description="userstore next key")
    return str(created["KeyMetadata"]["Arn"])


async def disable(parts: Components, arn: str) -> None:
    await parts.clients.kms.disable_key(KeyId=arn.rpartition("/")[2])  # moto: no ARN here


async def raw_item(parts: Components, item_id: str) -> dict[str, Any]:
    response = await parts.clients.dynamodb.get_item(
        TableName=parts.settings.table, Key={"user_id": {"S": item_id}}, ConsistentRead=True
    )
    item: dict[str, Any] = response["Item"]
    return item


async def put_raw(parts: Components, item: dict[str, Any]) -> None:
    await parts.clients.dynamodb.put_item(TableName=parts.settings.table, Item=item)


async def test_after_rotation_and_sweep_the_old_key_retires_and_everything_still_works(
    provisioned_settings: Settings,
) -> None:
    """Both key modes: rotate the KMS key, sweep, status says retire, disable the old key; a
    fresh process still starts, reads, finds, applies, verifies and reports."""
    settings = provisioned_settings
    async with components(settings) as parts:
        users = await load_users(parts, 6)
        old_kms = await parts.keys.active_kms_key()
        new_arn = await new_kms_key(parts)
        await rotate_key(parts, new_arn)
        before = await inventory(parts)
        assert not before.retirable()
        # rotate itself moved the control records and re-wrapped the index keys
        assert set(before.controls_by_key) == {str(before.active_key)}
        assert set(before.index_wrapped_under.values()) == {KeyRef.kms(new_arn)}
        assert before.stale == 6
        assert old_kms in before.old_keys()
        report = await run_sweep(parts, segments=2, rate_per_s=1000)
        assert report.ok and report.counts.resealed == 6
        after = await inventory(parts)
        assert after.retirable(), after.uses(old_kms)
        if settings.key_mode is KeyMode.CACHED:
            assert after.active_kms_key == KeyRef.kms(new_arn)
            assert after.material_keys[after.active_key.version] == KeyRef.kms(new_arn)
        await disable(parts, old_kms.arn)

    async with components(settings) as fresh:  # a restart, with the old key disabled
        for user, email in users.items():
            assert (await read_view(fresh, user))["email"] == email
            assert await find_by_email(fresh, email) == [user]
        some = next(iter(users))
        await fresh.handler.handle(
            event("u-after", "user.updated", some, at(5), {"given_name": "After"})
        )
        assert (await read_view(fresh, some))["given_name"] == "After"
        newcomer = uid()
        await fresh.handler.handle(
            event("c-new", "user.created", newcomer, at(5), {"email": "n@example.org"})
        )
        assert await find_by_email(fresh, "n@example.org") == [newcomer]
        assert (await inventory(fresh)).retirable()
        verified = await run_sweep(fresh, segments=2, rate_per_s=1000, verify=True)
        assert verified.ok and verified.counts.scanned == 7


async def test_a_replica_that_has_not_sealed_follows_only_a_change(
    provisioned_settings: Settings,
) -> None:
    async with components(provisioned_settings):
        pass  # creates the control records
    async with components(provisioned_settings) as parts:
        calls = Calls(Counter())
        count_calls(parts.clients.kms, "kms", calls)
        assert parts.cipher.sealing_ref is None  # has written nothing yet
        for _ in range(3):
            assert not await follow_control(parts)
        assert calls["DescribeKey"] == 0  # the announcement did not change: nothing to confirm
        async with components(provisioned_settings) as other:
            await rotate_key(other, await _next_target(other))
        assert await follow_control(parts)
        assert not await follow_control(parts)
        assert calls["DescribeKey"] <= 1  # the one change, confirmed once


async def _next_target(parts: Components) -> str:
    if parts.settings.key_mode is KeyMode.KMS:
        return await new_kms_key(parts)
    return "new"


async def test_a_replayed_control_record_is_refused_and_restored(moto_endpoint: str) -> None:
    from tests.harness.settings import make_settings, provision_settings

    settings = await provision_settings(make_settings(moto_endpoint))
    async with components(settings) as replica:
        user = uid()
        await replica.handler.handle(
            event("c1", "user.created", user, at(0), {"email": "replay@example.org"})
        )
        old_index = await raw_item(replica, INDEX_KEYS)
        assert await rotate_index_key(replica) == 2
        await run_sweep(replica, segments=1, rate_per_s=1000)  # re-indexed under version 2
        await put_raw(replica, old_index)  # a table writer puts back the older, signed record

        with pytest.raises(ControlRolledBack):
            await replica.controls.read(INDEX_KEYS)
        await follow_control(replica)  # refuses it, logs a security event, restores the newer
        assert replica.index.current.active_version == 2
        restored = await raw_item(replica, INDEX_KEYS)
        assert int(restored["rev"]["N"]) > int(old_index["rev"]["N"])

    async with components(settings) as fresh:
        assert fresh.index.current.active_version == 2
        assert await find_by_email(fresh, "replay@example.org") == [user]


async def test_a_record_naming_a_key_this_store_never_used_is_tampering_not_an_outage(
    moto_endpoint: str,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    from tests.harness.settings import make_settings, provision_settings

    settings = await provision_settings(make_settings(moto_endpoint))
    async with components(settings) as parts:
        victim, other = uid(), uid()
        for user in (victim, other):
            await parts.handler.handle(
                event(f"c-{user}", "user.created", user, at(0), {"given_name": "n"})
            )
        genuine = await raw_item(parts, victim)
        parts.cipher.REFRESH_EVERY_S = 0.0  # each case below re-reads the controls at once
        named: list[str] = []  # the KeyId of every Decrypt the encryption SDK sends

        def capture(params: dict[str, Any], **_: Any) -> None:
            named.append(str(params.get("KeyId")))

        parts.keys.sdk_kms().meta.events.register("provide-client-params.kms.Decrypt", capture)

        # 1. key_ref names a key that does not exist: no KMS call, tampering
        missing = "arn:aws:kms:eu-west-2:123456789012:key/00000000-0000-0000-0000-000000000000"
        await put_raw(parts, {**genuine, "key_ref": {"S": f"kms:{missing}"}})
        with pytest.raises(RecordTampered):
            await read_view(parts, victim)
        assert missing not in named  # refused before KMS was asked

        # 2. a whole record sealed under a key of the attacker's own (same account)
        evil_arn = await new_kms_key(parts)
        evil_ref = KeyRef.kms(evil_arn)
        kms = boto3.session.Session(region_name="eu-west-2").client(
            "kms", endpoint_url=moto_endpoint
        )
        with ThreadPoolExecutor(1) as pool:
            evil = ItemCipher(KmsKeys(evil_ref, kms), settings.table, pool, evil_ref)
            plain = await parts.cipher.open(genuine)
            await put_raw(parts, await evil.seal({**plain, "given_name": {"S": '"forged"'}}))
        with pytest.raises(RecordTampered):
            await read_view(parts, victim)
        assert evil_arn not in named
        with pytest.raises(RecordTampered):  # an event for that user is dead-lettered as such
            await parts.handler.handle(
                event("u1", "user.updated", victim, at(1), {"given_name": "x"})
            )

        # 3. key_ref names an old key of ours, but the data key is wrapped under the new one
        old = await parts.keys.active_kms_key()
        await rotate_key(parts, await new_kms_key(parts))
        await parts.handler.handle(event("u2", "user.updated", other, at(2), {"given_name": "m"}))
        under_new = await raw_item(parts, other)
        await put_raw(parts, {**under_new, "key_ref": {"S": str(old)}})
        named.clear()
        with pytest.raises(RecordTampered):
            await read_view(parts, other)
        assert named == [old.arn]  # KMS answered IncorrectKeyException for the named key

        # and the genuine record, put back, opens (a whole-item rollback is an accepted limit)
        await put_raw(parts, genuine)
        assert (await read_view(parts, victim))["given_name"] == "n"


async def test_a_replica_opens_records_under_the_aliases_new_key_before_the_announcement(
    provisioned_settings: Settings,
) -> None:
    """A replica may seal under the alias's new key (its poll reads the authority) before the
    control record announces it: the other replicas must open those records, not call them
    tampered, and while they may not re-read yet, ask for a retry rather than dead-letter."""
    async with (
        components(provisioned_settings) as ahead,
        components(provisioned_settings) as behind,
    ):
        user = uid()
        await behind.handler.handle(event("c1", "user.created", user, at(0), {"given_name": "A"}))
        new_arn = await new_kms_key(ahead)
        if provisioned_settings.key_mode is KeyMode.KMS:
            # What `rotate` does first: the alias moves; the control record comes after.
            await ahead.clients.kms.update_alias(
                AliasName=provisioned_settings.kms_key, TargetKeyId=new_arn.rpartition("/")[2]
            )
            await follow_authority(ahead)
        else:
            await rotate_key(ahead, new_arn)  # cached: the material version is the authority
        await ahead.handler.handle(event("u1", "user.updated", user, at(1), {"given_name": "B"}))
        assert (await read_view(behind, user))["given_name"] == "B"


async def test_retiring_an_unused_index_key_version(moto_endpoint: str) -> None:
    from tests.harness.settings import make_settings, provision_settings
    from userstore.worker.errors import UserstoreError
    from userstore.worker.rotation import retire_index_version

    settings = await provision_settings(make_settings(moto_endpoint))
    async with components(settings) as parts:
        users = await load_users(parts, 3)
        await rotate_index_key(parts)
        inv = await inventory(parts)
        assert inv.unused_index_versions() == []
        with pytest.raises(UserstoreError, match="3 records still use"):
            await retire_index_version(parts, 1, inv.emails_by_index_version.get(1, 0))
        await run_sweep(parts, segments=1, rate_per_s=1000)
        inv = await inventory(parts)
        assert inv.unused_index_versions() == [1]
        await retire_index_version(parts, 1, inv.emails_by_index_version.get(1, 0))
        assert sorted(parts.index.current.keys) == [2]
        control = await parts.controls.read(INDEX_KEYS)
        assert control is not None and set(control.body["versions"]) == {"2"}
        with pytest.raises(UserstoreError, match="active"):
            await retire_index_version(parts, 2, 0)
        for user, email in users.items():
            assert await find_by_email(parts, email) == [user]
