"""Reading what the worker stored: raw items, the user records, decrypted profiles."""

from __future__ import annotations

import asyncio
from typing import Any

from userstore.worker.settings import Settings


def scan_all(ddb: Any, table: str) -> list[dict[str, Any]]:
    return [
        item
        for page in ddb.get_paginator("scan").paginate(TableName=table)
        for item in page["Items"]
    ]


def read_profiles(settings: Settings, users: list[str]) -> dict[str, Any]:
    """Each user's decrypted profile (None when absent), read through the worker's own code."""
    from userstore.worker import profile
    from userstore.worker.app import components
    from userstore.worker.record import from_item

    async def read() -> dict[str, Any]:
        result: dict[str, Any] = {}
        async with components(settings) as parts:
            for user in users:
                record = await parts.store.get(user)
                result[user] = (
                    None
                    if record is None
                    else profile.view(from_item(await parts.cipher.open(record.item)))
                )
        return result

    return asyncio.run(read())


def stored_records(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    return {
        item["user_id"]["S"]: item
        for item in scan_all(ddb, table)
        if not item["user_id"]["S"].startswith("userstore control/")
    }
