"""A leak scanner: where do personal values appear in text we are about to publish?

``find_leaks`` looks for each personal value in each text, as is (case-insensitively) and in
the encodings a value commonly takes on its way into a log line, a dead-letter attribute or a
metric label: JSON-escaped, Python ``repr``-escaped, URL-encoded and base64 (at every byte
alignment, so a value in the middle of a larger base64 blob is found too).

A report must not become a leak itself: a ``Leak`` says where (source, offset, encoding) and
which value by length and hash only, and its snippet shows the surrounding text with every
personal value in it (in any of the encodings) replaced by ``<personal len=N sha256=...>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Leak", "assert_no_leaks", "find_leaks", "fingerprint", "format_leaks"]

CONTEXT_CHARS = 32
# Shorter base64 fragments would match unrelated base64 text too often.
_MIN_BASE64_FRAGMENT = 8


@dataclass(frozen=True)
class Leak:
    """One occurrence of a personal value, described without the value."""

    source: str
    offset: int
    length: int  # of the occurrence in the text (an encoding may be longer than the value)
    encoding: str
    value_length: int
    value_sha256: str  # first 12 hex digits of the SHA-256 of the value's UTF-8 form
    snippet: str  # the context, with every personal value redacted

    def __str__(self) -> str:
        return (
            f"{self.source}@{self.offset}: personal value (len={self.value_length}, "
            f"sha256={self.value_sha256}) as {self.encoding}: {self.snippet}"
        )


def fingerprint(value: str) -> str:
    """How a report names a value: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class _Needle:
    value: str
    encoding: str
    pattern: re.Pattern[str]


def _base64_fragments(raw: bytes) -> list[tuple[str, str]]:
    """The characters of base64 that depend only on ``raw``, at the three byte alignments."""
    fragments: list[tuple[str, str]] = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        start = -(-4 * shift // 3)  # ceil: the first character made of raw's bits only
        end = (4 * (shift + len(raw))) // 3  # floor: the last one
        fragment = encoded[start:end]
        if len(fragment) >= _MIN_BASE64_FRAGMENT:
            fragments.append((f"base64+{shift}", fragment))
            urlsafe = fragment.replace("+", "-").replace("/", "_")
            if urlsafe != fragment:
                fragments.append((f"base64url+{shift}", urlsafe))
    return fragments


def _needles(value: str) -> list[_Needle]:
    raw = value.encode("utf-8", "surrogatepass")
    textual: list[tuple[str, str]] = [
        ("plain", value),
        ("json", json.dumps(value, ensure_ascii=True)[1:-1]),
        ("json-unicode", json.dumps(value, ensure_ascii=False)[1:-1]),
        ("repr", repr(value)[1:-1]),
        ("ascii", ascii(value)[1:-1]),
        ("url", urllib.parse.quote(raw, safe="")),
        ("url-plus", urllib.parse.quote_plus(raw, safe="")),
        ("url-safe-chars", urllib.parse.quote(raw)),
    ]
    needles: list[_Needle] = []
    seen: set[tuple[str, bool]] = set()
    for encoding, text in textual:
        if (text.casefold(), True) in seen:
            continue
        seen.add((text.casefold(), True))
        # Case-insensitive: a value upper- or lower-cased (or with hex escapes in another case)
        # is as much a leak.
        needles.append(_Needle(value, encoding, re.compile(re.escape(text), re.IGNORECASE)))
    for encoding, fragment in _base64_fragments(raw):
        if (fragment, False) in seen:
            continue
        seen.add((fragment, False))
        needles.append(_Needle(value, encoding, re.compile(re.escape(fragment))))
    return needles


def _redacted_snippet(text: str, start: int, end: int, spans: list[tuple[int, int, str]]) -> str:
    """Context around [start, end) with every personal span in it replaced by a token."""
    lo, hi = max(0, start - CONTEXT_CHARS), min(len(text), end + CONTEXT_CHARS)
    # Never cut a personal value in half at the edges: widen to whole spans, then redact them.
    changed = True
    while changed:
        changed = False
        for s, e, _ in spans:
            if s < lo < e:
                lo, changed = s, True
            if s < hi < e:
                hi, changed = e, True
    # Longest first at each position, so that a value inside another is not redacted twice.
    inside = sorted(
        ((s, e, token) for s, e, token in spans if s < hi and e > lo),
        key=lambda span: (span[0], -span[1]),
    )
    parts: list[str] = ["..." if lo > 0 else ""]
    cursor = lo
    for s, e, token in inside:
        if e <= cursor:
            continue  # contained in a span already redacted
        if s > cursor:
            parts.append(text[cursor:s])
        parts.append(token)
        cursor = e
    if cursor < hi:
        parts.append(text[cursor:hi])
    parts.append("..." if hi < len(text) else "")
    # Escape the rest too (control characters, newlines): a snippet is one readable line.
    return ascii("".join(parts))[1:-1]


def find_leaks(texts: Mapping[str, str], personal_values: Iterable[str]) -> list[Leak]:
    """Every occurrence of any personal value in any text, in source order, then by offset."""
    values = list(dict.fromkeys(personal_values))
    if any(not value for value in values):
        raise ValueError("personal values must not be empty")
    needles = [needle for value in values for needle in _needles(value)]
    leaks: list[Leak] = []
    for source, text in texts.items():
        found: list[tuple[int, int, _Needle]] = []
        for needle in needles:
            found.extend((m.start(), m.end(), needle) for m in needle.pattern.finditer(text))
        if not found:
            continue
        spans = [
            (s, e, f"<personal len={len(n.value)} sha256={fingerprint(n.value)}>")
            for s, e, n in found
        ]
        reported: set[tuple[int, str]] = set()
        for start, end, needle in sorted(found, key=lambda f: (f[0], -f[1])):
            key = (start, needle.value)
            if key in reported:
                continue  # the same occurrence through another, identical-looking encoding
            reported.add(key)
            leaks.append(
                Leak(
                    source=source,
                    offset=start,
                    length=end - start,
                    encoding=needle.encoding,
                    value_length=len(needle.value),
                    value_sha256=fingerprint(needle.value),
                    snippet=_redacted_snippet(text, start, end, spans),
                )
            )
    return leaks


def format_leaks(leaks: Iterable[Leak], limit: int = 20) -> str:
    leaks = list(leaks)
    lines = [str(leak) for leak in leaks[:limit]]
    if len(leaks) > limit:
        lines.append(f"... and {len(leaks) - limit} more")
    return "\n".join(lines)


def assert_no_leaks(texts: Mapping[str, str], personal_values: Iterable[str]) -> None:
    """Fail with a report that names where, never what."""
    leaks = find_leaks(texts, personal_values)
    if leaks:
        raise AssertionError(f"{len(leaks)} personal value(s) leaked:\n{format_leaks(leaks)}")
