"""`userstore demo`: provision an emulator, publish sample traffic, run the worker, report.

The sample people are synthetic. The report shows one record exactly as stored (ciphertext), the
same record decrypted, and the dead letters with the reason each was refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from userstore.events import Publisher

from . import profile
from .app import Components, aws_clients, components, consumer_for
from .metrics import Metrics
from .provision import provision
from .queue_depth import Emptiness
from .record import from_item
from .settings import Settings
from .sqs import ERROR_ATTRIBUTE, EVENT_ID_ATTRIBUTE, REASON_ATTRIBUTE

GIVEN = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Tim", "Radia", "Ken"]
FAMILY = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Berners-Lee"]
TOWNS = ["Leeds", "York", "Bristol", "Cardiff", "Glasgow", "Belfast"]


def sample_traffic(
    users: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Valid events (creates, partial updates, deletes), some of them again, malformed bodies."""
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not secrets
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    events: list[dict[str, Any]] = []
    for n in range(users):
        user = f"urn:fdc:gov.uk:2022:demo-{n:04d}"
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        at = now + timedelta(seconds=rng.randrange(60))

        def event(kind: str, data: dict[str, Any] | None, user: str = user) -> dict[str, Any]:
            nonlocal at
            at += timedelta(seconds=1)
            body: dict[str, Any] = {
                "event_id": f"demo-{uuid.UUID(int=rng.getrandbits(128)).hex}",
                "type": kind,
                "user_id": user,
                "occurred_at": at.isoformat(),
            }
            if data is not None:
                body["data"] = data
            return body

        events.append(
            event(
                "user.created",
                {
                    "email": f"{given}.{family}.{n}@example.org".lower(),
                    "email_verified": rng.random() < 0.5,
                    "given_name": given,
                    "family_name": family,
                    "birthdate": _birthdate(rng),
                    "address": {"locality": rng.choice(TOWNS), "country": "GB"},
                    "attributes": {"tier": rng.choice(["basic", "gold"]), "logins": 0},
                },
            )
        )
        for k in range(rng.randrange(0, 4)):
            patch: dict[str, Any] = rng.choice(
                [
                    {
                        "phone_number": f"+44770090{rng.randrange(10**4):04d}",
                        "phone_number_verified": False,
                    },
                    {"email_verified": True},
                    {"address": {"locality": rng.choice(TOWNS)}},
                    {"attributes": {"logins": k + 1, "tier": None}},
                    {"birthdate": None},
                ]
            )
            events.append(event("user.updated", patch))
        if rng.random() < 0.15:
            events.append(event("user.deleted", None))
    redelivered = rng.sample(events, k=len(events) // 10)
    t = now.isoformat()
    malformed = [
        "this is not JSON",
        json.dumps(
            {"event_id": "bad-type", "type": "user.renamed", "user_id": "u", "occurred_at": t}
        ),
        json.dumps(
            {
                "event_id": "bad-email",
                "type": "user.created",
                "user_id": "u",
                "occurred_at": t,
                "data": {"email": "not-an-email"},
            }
        ),
        json.dumps(
            {
                "event_id": "bad-field",
                "type": "user.updated",
                "user_id": "u",
                "occurred_at": t,
                "data": {"nickname": "Ada"},
            }
        ),
        json.dumps(
            {
                "event_id": "bad-phone",
                "type": "user.updated",
                "user_id": "u",
                "occurred_at": t,
                "data": {"phone_number": "07700 900123"},
            }
        ),
        json.dumps(
            {
                "event_id": "bad-time",
                "type": "user.deleted",
                "user_id": "u",
                "occurred_at": "yesterday",
            }
        ),
        json.dumps(
            {
                "event_id": "bad-version",
                "type": "user.deleted",
                "user_id": "u",
                "occurred_at": t,
                "schema_version": 9,
            }
        ),
    ]
    return events, redelivered, malformed


def _birthdate(rng: random.Random) -> str:
    return f"{rng.randrange(1940, 2005)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"


async def run_demo(settings: Settings, *, users: int, seed: int) -> None:
    metrics = Metrics()
    async with _provisioned(settings) as parts:
        sqs = parts.clients.sqs
        consumer = await consumer_for(parts, metrics)
        queue, dlq = consumer._config.queue_url, consumer._config.dlq_url
        events, redelivered, malformed = sample_traffic(users, seed)
        click.echo(
            f"publishing {len(events)} events, {len(redelivered)} of them again (as a publisher "
            f"retrying after SQS's deduplication window would), and {len(malformed)} malformed "
            "messages ..."
        )
        await Publisher(sqs, queue).publish(events)
        raw = [(e["user_id"], json.dumps(e)) for e in redelivered]
        raw += [("malformed", text) for text in malformed]
        for n, (group, text) in enumerate(raw):
            await sqs.send_message(
                QueueUrl=queue,
                MessageBody=text,
                MessageGroupId=group,
                MessageDeduplicationId=f"again-{n}",
            )
        stop = asyncio.Event()
        worker = asyncio.create_task(consumer.run(stop))
        started = asyncio.get_running_loop().time()
        await _wait_drained(sqs, queue)
        elapsed = asyncio.get_running_loop().time() - started
        stop.set()
        await worker

        click.echo(f"\nqueue drained in {elapsed:.1f} s\n")
        click.echo("events by outcome:")
        for kind in ("user.created", "user.updated", "user.deleted"):
            counts = {
                o: int(metrics.count("userstore_events", {"type": kind, "outcome": o}))
                for o in ("applied", "duplicate", "stale", "unchanged")
            }
            click.echo(f"  {kind:13} " + "  ".join(f"{o}={c}" for o, c in counts.items()))
        sample = events[0]["user_id"]
        record = await parts.store.get(sample)
        if record is not None:
            click.echo(f"\none record as stored in DynamoDB ({sample}):")
            click.echo(json.dumps(_printable(record.item), indent=2, sort_keys=True))
            state = from_item(await parts.cipher.open(record.item))
            click.echo("\nthe same record, verified and decrypted (`userstore get`):")
            click.echo(json.dumps(profile.view(state), indent=2, sort_keys=True))
        click.echo("\ndead letters:")
        for message in await _drain_dead_letters(sqs, dlq):
            attrs = message.get("MessageAttributes", {})
            event_id = attrs.get(EVENT_ID_ATTRIBUTE, {}).get("StringValue", "-")
            error = attrs.get(ERROR_ATTRIBUTE, {}).get("StringValue", "?")
            reason = attrs.get(REASON_ATTRIBUTE, {}).get("StringValue", "?")
            click.echo(f"  {event_id:12} {error:16} {reason}")


@asynccontextmanager
async def _provisioned(settings: Settings) -> AsyncIterator[Components]:
    async with aws_clients(settings) as clients:
        await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
    async with components(settings) as parts:
        yield parts


def _printable(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in item.items():
        if "B" in value:
            text = base64.b64encode(value["B"]).decode()
            out[name] = {"B": text if len(text) <= 48 else text[:44] + "..."}
        elif "L" in value:
            out[name] = {"L": f"[{len(value['L'])} event ids]"}
        else:
            out[name] = value
    return out


async def _wait_drained(sqs: Any, url: str) -> None:
    """Until every reading for a second says nothing waits and nothing is in flight."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    loop = asyncio.get_running_loop()
    empty = Emptiness()
    while True:
        attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names))["Attributes"]
        if empty.observe(sum(int(attrs[n]) for n in names), loop.time()):
            return
        await asyncio.sleep(0.2)


async def _drain_dead_letters(sqs: Any, url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        response = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        )
        if not response.get("Messages"):
            return found
        found += response["Messages"]
        await sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(response["Messages"])
            ],
        )
