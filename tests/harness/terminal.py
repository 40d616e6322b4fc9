"""A command with its standard input and error on a pseudo-terminal, as an operator runs it."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
from typing import NamedTuple

TIMEOUT_S = 60


class TerminalRun(NamedTuple):
    returncode: int
    stdout: str
    terminal: str  # what the terminal showed: stderr, and the typed input echoed


def run_on_terminal(args: list[str], env: dict[str, str], typed: str | None = None) -> TerminalRun:
    """Run `args` with stdin and stderr on a terminal (stdout a pipe); `typed` is typed in,
    then Ctrl-D (end of input)."""
    master, slave = pty.openpty()
    # 24 rows of 120 columns: a new pseudo-terminal has 0, and a progress bar would draw nothing
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(args, env=env, stdin=slave, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    shown: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every process holding the terminal has exited
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if typed is not None:
        os.write(master, typed.encode())
        os.write(master, b"\x04")  # Ctrl-D at the start of a line: end of input
    try:
        stdout, _ = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        os.close(master)
    text = b"".join(shown).decode(errors="replace").replace("\r\n", "\n")
    return TerminalRun(proc.returncode, stdout.decode(errors="replace"), text)
