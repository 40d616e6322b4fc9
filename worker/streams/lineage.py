"""Pure: which shards of a stream may be read now (parents before children).

DynamoDB closes a shard every few hours and when it splits one (one parent, one or two
children). A child's records about an item follow its parent's, so reading a child before its
parent is finished could apply an older image after a newer one. A shard is therefore readable
only when it is not finished itself and its parent is finished (checkpoint SHARD_END) or gone
from the stream (trimmed after the 24-hour retention: nothing left to read there).

No I/O and no clock; tested by table in tests/unit/test_stream_lineage.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SHARD_END = "SHARD_END"
"""The checkpoint of a shard read to its end: its children may start."""


@dataclass(frozen=True)
class Shard:
    """A shard as DescribeStream lists it: only its identity and its parent matter here."""

    shard_id: str
    parent_id: str | None = None


def readable(shards: Sequence[Shard], checkpoints: Mapping[str, str | None]) -> list[str]:
    """The shards that may be read now, in listing order.

    `checkpoints` maps shard ids to their stored checkpoint (a sequence number, SHARD_END or
    None); shards missing from it have never been read.
    """
    listed = {shard.shard_id for shard in shards}

    def finished(shard_id: str) -> bool:
        return checkpoints.get(shard_id) == SHARD_END

    return [
        shard.shard_id
        for shard in shards
        if not finished(shard.shard_id)
        and (shard.parent_id is None or shard.parent_id not in listed or finished(shard.parent_id))
    ]
