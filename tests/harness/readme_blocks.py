"""The README's shell blocks, each with an id that survives edits around it.

A block's id is its section's heading and, inside the section, the bold lead-in of the paragraph
it follows (`**Rotating keys.**`), slugged, then its number among the blocks under both:
`operations/rotating-keys#1`, `quick-start#1`. An HTML comment on the line just before the fence,
`<!-- block: rotate -->`, names the block instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*block:\s*([\w./#-]+)\s*-->\s*$")
_LEAD = re.compile(r"^\*\*([^*]+?)\.?\*\*")


@dataclass(frozen=True)
class Block:
    id: str
    section: str  # the `## ` heading it is under
    text: str


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def shell_blocks(markdown: str, sections: tuple[str, ...]) -> list[Block]:
    """The shell blocks under the `## ` headings named in `sections`, in order."""
    blocks: list[Block] = []
    section = lead = ""
    counts: dict[str, int] = {}
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section, lead = line[3:].strip(), ""
        elif line.startswith("### "):
            lead = line[4:].strip()
        elif (match := _LEAD.match(line)) is not None:
            lead = match.group(1)
        fence = _FENCE.match(line)
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if section in sections and fence.group(1) in SHELL_LANGUAGES:
            marker = _MARKER.match(lines[index - 1]) if index else None
            place = "/".join(slug(part) for part in (section, lead) if part)
            counts[place] = counts.get(place, 0) + 1
            block_id = marker.group(1) if marker else f"{place}#{counts[place]}"
            blocks.append(Block(block_id, section, "\n".join(lines[index + 1 : end]) + "\n"))
        index = end + 1
    return blocks
