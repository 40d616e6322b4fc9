"""The `userstore` command's entry point: the CLI, or one line if the worker is not installed.

The base distribution is the event contract and publisher client only; the command needs the
`worker` extra. Without it, `import click` (or another worker dependency) fails, and the user
should read what to install, not a traceback.
"""

from __future__ import annotations

import sys

EXIT_USAGE = 2


def main() -> None:
    try:
        from .cli import command_line
    except ModuleNotFoundError as exc:
        print(
            f"userstore: the worker is not installed (missing module {exc.name!r}); "
            "install it with: pip install 'userstore[worker]'",
            file=sys.stderr,
        )
        sys.exit(EXIT_USAGE)
    command_line()
