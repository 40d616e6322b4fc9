"""Key rotation, the re-encryption sweep and blind-index search against a moto server process."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.harness import forgery
from tests.harness.counting import event
from userstore.worker import profile
from userstore.worker.app import Components, components
from userstore.worker.follow import follow_control
from userstore.worker.inventory import inventory as key_usage
from userstore.worker.record import from_item
from userstore.worker.rotation import rotate_index_key, rotate_key
from userstore.worker.search import EmailMatches, find_by_email, match_email
from userstore.worker.settings import KeyMode, Settings
from userstore.worker.sweep import run_sweep

NOW = datetime.now(UTC).replace(microsecond=0)


def at(seconds: int) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat()


async def load_users(parts: Components, count: int) -> dict[str, dict[str, Any]]:
    users = {}
    for n in range(count):
        user = f"urn:fdc:gov.uk:2022:rot-{uuid.uuid4().hex[:10]}"
        data = {
            "email": f"Person.{n}@Example.org",
            "given_name": f"Given{n}",
            "attributes": {"n": n},
        }
        await parts.handler.handle(event(f"c-{user}", "user.created", user, at(0), data))
        users[user] = data
    return users


async def views(parts: Components, users: list[str]) -> dict[str, Any]:
    result = {}
    for user in users:
        record = await parts.store.get(user)
        assert record is not None
        result[user] = profile.view(from_item(await parts.cipher.open(record.item)))
    return result


async def new_target(parts: Components) -> str:
    if parts.settings.key_mode is KeyMode.KMS:
        created = await parts.clients.kms.create_key(Description="userstore rotated key")
        return str(created["KeyMetadata"]["Arn"])
    return "new"


async def test_rotate_then_sweep_reencrypts_everything_without_changing_content(
    provisioned_settings: Settings,
) -> None:
    async with components(provisioned_settings) as parts:
        users = await load_users(parts, 25)
        before = await views(parts, list(users))
        old_ref = str((await key_usage(parts)).active_key)
        new_ref = str(await rotate_key(parts, await new_target(parts)))
        assert new_ref != old_ref
        usage = await key_usage(parts)
        assert str(usage.active_key) == new_ref
        assert usage.records_by_key == {old_ref: 25}
        report = await run_sweep(parts, segments=3, rate_per_s=1000)
        assert report.ok
        assert (report.counts.scanned, report.counts.resealed) == (25, 25)
        usage = await key_usage(parts)
        assert usage.records_by_key == {new_ref: 25}
        assert usage.stale == 0
        assert await views(parts, list(users)) == before
        # a second sweep finds nothing to do
        again = await run_sweep(parts, segments=3, rate_per_s=1000)
        assert (again.counts.scanned, again.counts.resealed, again.counts.current) == (25, 0, 25)


async def test_a_replica_follows_a_confirmed_rotation(provisioned_settings: Settings) -> None:
    async with (
        components(provisioned_settings) as first,
        components(provisioned_settings) as second,
    ):
        user = f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:10]}"
        await second.handler.handle(event("c1", "user.created", user, at(0), {"given_name": "A"}))
        new_ref = str(await rotate_key(first, await new_target(first)))
        assert await follow_control(second)
        await second.handler.handle(event("u1", "user.updated", user, at(1), {"given_name": "B"}))
        record = await second.store.get(user)
        assert record is not None
        assert record.head.key_ref == new_ref


async def test_find_by_email_follows_changes_deletes_and_index_rotation(moto_endpoint: str) -> None:
    from tests.harness.settings import make_settings, provision_settings

    settings = await provision_settings(make_settings(moto_endpoint))
    async with components(settings) as parts:
        a, b, c = (f"urn:fdc:gov.uk:2022:find-{uuid.uuid4().hex[:8]}" for _ in range(3))
        await parts.handler.handle(
            event("a1", "user.created", a, at(0), {"email": "shared@example.org"})
        )
        await parts.handler.handle(
            event("b1", "user.created", b, at(0), {"email": "Shared@Example.ORG"})
        )
        await parts.handler.handle(
            event("c1", "user.created", c, at(0), {"email": "other@example.org"})
        )
        assert await find_by_email(parts, "shared@example.org") == sorted([a, b])
        await parts.handler.handle(
            event("b2", "user.updated", b, at(1), {"email": "moved@example.org"})
        )
        assert await find_by_email(parts, "SHARED@example.org") == [a]
        assert await find_by_email(parts, "moved@example.org") == [b]
        await parts.handler.handle(event("a2", "user.deleted", a, at(2)))
        assert await find_by_email(parts, "shared@example.org") == []
        # rotate the index key: old tokens still found until the sweep re-indexes them
        assert await rotate_index_key(parts) == 2
        assert await find_by_email(parts, "other@example.org") == [c]
        report = await run_sweep(parts, segments=2, rate_per_s=1000)
        assert report.counts.resealed == 2  # b and c have an email; a is a tombstone
        usage = await key_usage(parts)
        assert usage.emails_by_index_version == {2: 2}
        assert await find_by_email(parts, "other@example.org") == [c]
        assert await find_by_email(parts, "moved@example.org") == [b]
        # An internationalized domain: its U-label and A-label spellings are one address.
        d = f"urn:fdc:gov.uk:2022:find-{uuid.uuid4().hex[:8]}"
        await parts.handler.handle(
            event("d1", "user.created", d, at(3), {"email": "Zoë@Bücher.example"})
        )
        assert await find_by_email(parts, "zoë@xn--bcher-kva.example") == [d]
        assert await find_by_email(parts, "ZOË@BÜCHER.EXAMPLE") == [d]


async def test_sweep_reports_a_tampered_record_and_leaves_it(moto_endpoint: str) -> None:
    from tests.harness.settings import make_settings, provision_settings

    settings = await provision_settings(make_settings(moto_endpoint))
    async with components(settings) as parts:
        users = await load_users(parts, 4)
        victim = next(iter(users))
        record = await parts.store.get(victim)
        assert record is not None
        # the signed-only bookkeeping `h` edited (format 2 has no plaintext stamp to forge)
        forged = forgery.with_presence(record.item, profile.Presence.DELETED)
        await parts.clients.dynamodb.put_item(TableName=settings.table, Item=forged)
        await rotate_key(parts, await new_target(parts))
        report = await run_sweep(parts, segments=2, rate_per_s=1000)
        assert not report.ok
        assert (report.counts.failed, report.counts.resealed) == (1, 3)
        assert report.failed_user_ids == [victim]
        after = await parts.store.get(victim)
        assert after is not None
        assert after.item == forged


async def test_a_forged_control_record_is_not_followed(moto_endpoint: str) -> None:
    """A table writer with a KMS key of their own can seal a control record, not move the alias."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    from tests.harness.settings import make_settings, provision_settings
    from userstore.worker.control import ACTIVE_KEY, ControlRecords
    from userstore.worker.crypto import ItemCipher, KmsKeys
    from userstore.worker.keyref import KeyRef

    settings = await provision_settings(make_settings(moto_endpoint))
    async with components(settings) as parts:
        user = f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:10]}"
        await parts.handler.handle(event("c1", "user.created", user, at(0), {"given_name": "A"}))
        real_ref = parts.cipher.sealing_ref
        evil_arn = (await parts.clients.kms.create_key(Description="attacker"))["KeyMetadata"][
            "Arn"
        ]
        kms = boto3.session.Session(region_name="eu-west-2").client(
            "kms", endpoint_url=moto_endpoint
        )
        with ThreadPoolExecutor(1) as pool:
            evil_ref = KeyRef.kms(evil_arn)
            evil = ItemCipher(KmsKeys(evil_ref, kms), settings.table, pool, evil_ref)
            control = await parts.controls.read(ACTIVE_KEY)
            assert control is not None
            forged = {"active_key_ref": f"kms:{evil_arn}", "history": [], "reencrypt_pending": True}
            assert await ControlRecords(parts.store, evil).write(
                ACTIVE_KEY, forged, expected_rev=control.rev
            )
        assert not await follow_control(parts)
        await parts.handler.handle(event("u1", "user.updated", user, at(1), {"given_name": "B"}))
        record = await parts.store.get(user)
        assert record is not None
        assert record.head.key_ref == str(real_ref)
        # and a sweep (the job the forged record asks for) keeps to the real key too
        report = await run_sweep(parts, segments=1, rate_per_s=1000)
        assert report.target.key_ref == real_ref


async def test_find_by_email_skips_a_tampered_candidate_and_logs_it(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.harness.settings import make_settings, provision_settings

    settings = await provision_settings(make_settings(moto_endpoint))
    async with components(settings) as parts:
        genuine, forged, other = (f"urn:fdc:gov.uk:2022:tf-{uuid.uuid4().hex[:8]}" for _ in "abc")
        shared = "Shared.Person@Example.org"
        for n, user in enumerate((genuine, forged)):
            await parts.handler.handle(
                event(f"c{n}", "user.created", user, at(0), {"email": shared})
            )
        await parts.handler.handle(
            event("c3", "user.created", other, at(0), {"email": "other@example.org"})
        )
        record = await parts.store.get(forged)
        donor = await parts.store.get(other)
        assert record is not None and donor is not None
        assert await match_email(parts, shared) == EmailMatches(sorted([genuine, forged]), [])
        capsys.readouterr()
        # 1: the signed-only bookkeeping `h` edited (a forged remembered event: presence is
        # left as it is, so the record stays a candidate); 2: the encrypted `d` (claims) swapped
        # in from another user's record (the index token left as it is, so it stays a candidate).
        for item in (
            forgery.with_remembered(record.item, "next", None),
            forgery.with_data_of(record.item, donor.item),
        ):
            await parts.clients.dynamodb.put_item(TableName=settings.table, Item=item)
            assert await match_email(parts, shared.upper()) == EmailMatches([genuine], [forged])
            assert await find_by_email(parts, shared) == [genuine]
            out = capsys.readouterr()
            # One line per lookup (JSON in the worker, console lines in tests).
            security = [
                line
                for line in (out.out + out.err).splitlines()
                if "security.record_verification_failed" in line
            ]
            assert len(security) == 2 and all("find" in line for line in security), security
            assert "@" not in out.out + out.err  # no email, in any spelling
            assert forged not in out.out + out.err  # nor the user id: the caller gets it
