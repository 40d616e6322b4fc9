"""Start ministack with its ready.d hooks taken from the directory given as first argument.

Run by the python of ministack's own virtualenv (it pins botocore), never the project's. ministack
runs ready.d hooks only from two fixed system paths (/etc/localstack/init/ready.d and
/docker-entrypoint-initaws.d/ready.d); the only change here is where it looks, so it discovers,
runs and reports the project's localstack/ready.d hooks exactly as it would those.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path: the harness's own modules must
# not shadow the standard library's (or ministack's) for ministack's imports.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(__file__)]

import ministack.app as ministack  # noqa: E402 - after the path is cleaned

hooks_dir = sys.argv.pop(1)
_collect_scripts = ministack._collect_scripts


def _collect_from_hooks_dir(*dirs: str) -> list[str]:
    if any(d.rstrip("/").endswith("ready.d") for d in dirs):
        return _collect_scripts(hooks_dir)
    return _collect_scripts(*dirs)


ministack._collect_scripts = _collect_from_hooks_dir
ministack.main()
