"""Record format 2: a user's record in about a third of format 1's bytes (pure: no I/O, no crypto).

Two attributes hold what format 1 spread over a dozen, both in a compact binary layout:

    h  B  signed only: the bookkeeping read before verifying (presence, remembered events)
    d  B  encrypted and signed: the whole clock and every claim, deflated when that pays

Why so few: each encrypted attribute costs 30-50 bytes of IV, padding and type header, and
every attribute name counts towards DynamoDB's item size; a stored stamp (UTC time, tie-break)
takes 12 bytes instead of 60 characters, and each distinct stamp is stored once and referred to.

    h = presence (1 byte: 0 none, 1 present, 2 deleted)
        varint: index key version of the content digests
        per remembered event, oldest first: id digest (8 bytes) + content digest (4 bytes,
        all zero: none to compare)
    d = flags (1 byte: bit 0, the rest is raw-deflated)
        varint n, n stamps ascending: microseconds since the epoch (varint, as the difference
                  from the previous stamp's) + tie-break (4 bytes)
        presence stamp (stamp reference)
        varint n, n resets: container (1 byte: 0 whole profile, 1 address, 2 attributes) + ref
        varint n, n entries: path (varint: 1.. a known leaf, 0 then the path as text) + ref
                             + value (varint length + canonical JSON; length 0: removed)

A stamp reference is a varint: 0 for no stamp, i + 1 for the i-th stamp of the table.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from .profile import (
    ID_TAG_BYTES,
    NO_STAMP,
    ROOT,
    TIE_BYTES,
    Digest,
    Entry,
    Presence,
    Remembered,
    Stamp,
    UserState,
)

HEAD = "h"
DATA = "d"
DIGEST_BYTES = 4
_NO_DIGEST = bytes(DIGEST_BYTES)
_PRESENCE = [None, Presence.PRESENT, Presence.DELETED]
_CONTAINERS = [ROOT, "address", "attributes"]
# Codes of the leaves every profile may have. Append only: a code, once stored, keeps its path.
KNOWN_PATHS = [
    "email",
    "email_verified",
    "phone_number",
    "phone_number_verified",
    "given_name",
    "family_name",
    "birthdate",
    "address.street_address",
    "address.locality",
    "address.region",
    "address.postal_code",
    "address.country",
]
_PATH_CODES = {path: code for code, path in enumerate(KNOWN_PATHS, start=1)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DEFLATED = 1


class Malformed(ValueError):
    """The bytes do not follow the layout."""


# -- h: bookkeeping --------------------------------------------------------------------------


def pack_head(presence: Presence | None, recent: tuple[Remembered, ...]) -> bytes:
    versions = {e.content.version for e in recent if e.content is not None}
    if len(versions) > 1:
        raise ValueError("remembered digests must share one index key version")
    out = bytearray([_PRESENCE.index(presence)])
    _put_varint(out, versions.pop() if versions else 0)
    for entry in recent:
        if len(entry.id_tag) != ID_TAG_BYTES:
            raise ValueError("an id digest has the wrong length")
        out += entry.id_tag
        out += _NO_DIGEST if entry.content is None else _nonzero(entry.content.tag)
    return bytes(out)


def unpack_head(raw: bytes) -> tuple[Presence | None, tuple[Remembered, ...]]:
    reader = _Reader(raw)
    presence = _PRESENCE[reader.byte(len(_PRESENCE))]
    version = reader.varint()
    entry_size = ID_TAG_BYTES + DIGEST_BYTES
    body = reader.rest()
    if len(body) % entry_size:
        raise Malformed("remembered events are cut short")
    recent = []
    for start in range(0, len(body), entry_size):
        tag = body[start : start + ID_TAG_BYTES]
        digest = body[start + ID_TAG_BYTES : start + entry_size]
        content = None if digest == _NO_DIGEST else Digest(version, digest)
        recent.append(Remembered(tag, content))
    return presence, tuple(recent)


def _nonzero(tag: bytes) -> bytes:
    """A digest that happens to be all zeros is stored with its last bit set (it would read as
    "no digest"; the cost is one bit of the 32 for that one value)."""
    if len(tag) != DIGEST_BYTES:
        raise ValueError("a content digest has the wrong length")
    return tag if tag != _NO_DIGEST else _NO_DIGEST[:-1] + b"\x01"


# -- d: clock and claims ---------------------------------------------------------------------


def pack_data(state: UserState) -> bytes:
    stamps = sorted(
        {s for s in (state.presence_stamp, *state.resets.values()) if s}
        | {e.stamp for e in state.entries.values() if e.stamp}
    )
    refs = {stamp: i + 1 for i, stamp in enumerate(stamps)}
    refs[NO_STAMP] = 0
    body = bytearray()
    _put_varint(body, len(stamps))
    previous = 0
    for stamp in stamps:
        micros, tie = _stamp_parts(stamp)
        _put_varint(body, micros - previous)  # ascending: small deltas, few bytes
        body += tie
        previous = micros
    _put_varint(body, refs[state.presence_stamp])
    _put_varint(body, len(state.resets))
    for container, stamp in sorted(state.resets.items()):
        body.append(_CONTAINERS.index(container))
        _put_varint(body, refs[stamp])
    _put_varint(body, len(state.entries))
    for path, entry in sorted(state.entries.items()):
        code = _PATH_CODES.get(path, 0)
        _put_varint(body, code)
        if not code:
            _put_text(body, path.encode())
        _put_varint(body, refs[entry.stamp])
        _put_text(body, b"" if entry.value is None else _json(entry.value))
    plain = bytes(body)
    # Raw deflate (no header or checksum to pay for) with a 512-byte window and the smallest
    # memory level: a record is a few hundred bytes, and the default 32 KB window's set-up would
    # cost ten times the compression itself. Inflating takes any window.
    deflater = zlib.compressobj(9, zlib.DEFLATED, -9, 1)
    deflated = deflater.compress(plain) + deflater.flush()
    if len(deflated) < len(plain):
        return bytes([_DEFLATED]) + deflated
    return b"\x00" + plain


def unpack_data(raw: bytes, presence: Presence | None) -> UserState:
    if not raw:
        raise Malformed("no data")
    flags, payload = raw[0], raw[1:]
    if flags & ~_DEFLATED:
        raise Malformed("unknown flags")
    if flags & _DEFLATED:
        try:
            payload = zlib.decompress(payload, -15)
        except zlib.error as exc:
            raise Malformed("data does not inflate") from exc
    reader = _Reader(payload)
    stamps = [NO_STAMP]
    micros = 0
    for _ in range(reader.varint()):
        micros += reader.varint()
        stamps.append(_stamp_text(micros, reader.take(TIE_BYTES)))
    presence_stamp = reader.ref(stamps)
    resets: dict[str, Stamp] = {}
    for _ in range(reader.varint()):
        container = _CONTAINERS[reader.byte(len(_CONTAINERS))]
        resets[container] = reader.ref(stamps)
    entries: dict[str, Entry] = {}
    for _ in range(reader.varint()):
        code = reader.varint()
        if code > len(KNOWN_PATHS):
            raise Malformed("unknown path code")
        path = KNOWN_PATHS[code - 1] if code else reader.text().decode()
        stamp = reader.ref(stamps)
        value = reader.text()
        entries[path] = Entry(stamp, json.loads(value) if value else None)
    if not reader.done():
        raise Malformed("trailing bytes")
    return UserState(presence, presence_stamp, resets, entries)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _stamp_parts(stamp: Stamp) -> tuple[int, bytes]:
    """Microseconds since the epoch, and the tie-break's bytes. Parsed by position (the text is
    fixed width, profile.stamp_of): strptime would be most of the cost of packing a record."""
    when, _, tie = stamp.partition("|")
    if len(when) != 27 or when[4] != "-" or when[10] != "T" or when[19] != "." or when[26] != "Z":
        raise ValueError("not a stamp")
    moment = datetime(
        int(when[0:4]),
        int(when[5:7]),
        int(when[8:10]),
        int(when[11:13]),
        int(when[14:16]),
        int(when[17:19]),
        int(when[20:26]),
        tzinfo=UTC,
    )
    tie_break = bytes.fromhex(tie)
    if len(tie_break) != TIE_BYTES:
        raise ValueError("a stamp's tie-break has the wrong length")
    return (moment - _EPOCH) // _MICROSECOND, tie_break


def _stamp_text(micros: int, tie: bytes) -> Stamp:
    moment = _EPOCH + micros * _MICROSECOND
    return f"{moment:%Y-%m-%dT%H:%M:%S.%fZ}|{tie.hex()}"


# -- bytes -----------------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("varints are unsigned")
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return


def _put_text(out: bytearray, raw: bytes) -> None:
    _put_varint(out, len(raw))
    out += raw


class _Reader:
    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._at = 0

    def take(self, n: int) -> bytes:
        if self._at + n > len(self._raw):
            raise Malformed("cut short")
        chunk = self._raw[self._at : self._at + n]
        self._at += n
        return chunk

    def byte(self, below: int) -> int:
        value = self.take(1)[0]
        if value >= below:
            raise Malformed("value out of range")
        return value

    def varint(self) -> int:
        raw, at = self._raw, self._at
        value = shift = 0
        while True:
            if at >= len(raw):
                raise Malformed("cut short")
            byte = raw[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self._at = at
                return value
            shift += 7
            if shift > 63:
                raise Malformed("varint too long")

    def text(self) -> bytes:
        return self.take(self.varint())

    def ref(self, stamps: list[Stamp]) -> Stamp:
        index = self.varint()
        if index >= len(stamps):
            raise Malformed("stamp reference out of range")
        return stamps[index]

    def rest(self) -> bytes:
        chunk = self._raw[self._at :]
        self._at = len(self._raw)
        return chunk

    def done(self) -> bool:
        return self._at == len(self._raw)
