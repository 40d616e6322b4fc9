"""How the README test names shell blocks (tests/harness/readme_blocks.py): ids that survive a
block added in another part of the section, markers that name a block outright."""

from __future__ import annotations

from tests.harness.readme_blocks import shell_blocks

MARKDOWN = """# title

## Quick start

```sh
./dev demo
```

```python
print("not shell")
```

## Operations

**Dead letters.** text

```sh
userstore dlq list
```

```bash
userstore dlq redrive
```

**Rotating keys.** More text.

<!-- block: rotate -->
```sh
userstore rotate --to KEY
```

```
not a shell block: no language
```

### Sub heading

```console
userstore sweep
```

## Local stack

```sh
docker compose up
```
"""


def test_ids_by_heading_lead_in_and_number_or_marker() -> None:
    blocks = shell_blocks(MARKDOWN, ("Quick start", "Operations"))
    assert [(b.id, b.section, b.text) for b in blocks] == [
        ("quick-start#1", "Quick start", "./dev demo\n"),
        ("operations/dead-letters#1", "Operations", "userstore dlq list\n"),
        ("operations/dead-letters#2", "Operations", "userstore dlq redrive\n"),
        ("rotate", "Operations", "userstore rotate --to KEY\n"),
        ("operations/sub-heading#1", "Operations", "userstore sweep\n"),
    ]


def test_a_block_added_under_another_lead_in_renames_nothing() -> None:
    added = MARKDOWN.replace(
        "**Rotating keys.**", "```sh\nuserstore get X\n```\n\n**Rotating keys.**"
    )
    ids = [b.id for b in shell_blocks(added, ("Operations",))]
    assert ids == [
        "operations/dead-letters#1",
        "operations/dead-letters#2",
        "operations/dead-letters#3",
        "rotate",
        "operations/sub-heading#1",
    ]
    before = shell_blocks(MARKDOWN, ("Operations",))
    other = MARKDOWN.replace("## Operations\n", "## Operations\n\n```sh\nuserstore x\n```\n")
    assert [b.id for b in shell_blocks(other, ("Operations",))][1:] == [b.id for b in before]
