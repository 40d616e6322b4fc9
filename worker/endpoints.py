"""Encryption in transit: refuse plain HTTP to anything but this machine, unless allowed.

Records are encrypted client-side, but requests still carry user ids, blind-index tokens and
credentials' signatures; an emulator on loopback is the only reason to speak plain HTTP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from .errors import InsecureEndpoint as InsecureEndpoint
from .errors import InvalidSetting

ENDPOINT_VARIABLES_PREFIX = "AWS_ENDPOINT_URL"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_endpoints(
    endpoint_url: str | None, environ: Mapping[str, str], *, allow_insecure: bool
) -> None:
    """Raise InsecureEndpoint for any plain-HTTP endpoint off loopback (the settings' own, and
    the per-service AWS_ENDPOINT_URL_* variables the AWS SDKs also honour); InvalidSetting for
    one that is not an http(s) URL (the SDKs would fail on it with a traceback)."""
    endpoints = {"AWS_ENDPOINT_URL": endpoint_url} | {
        name: value for name, value in environ.items() if name.startswith(ENDPOINT_VARIABLES_PREFIX)
    }
    for name, url in endpoints.items():
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidSetting(
                f"{name}={url!r} is not an http:// or https:// URL with a host "
                f"(with its scheme: http://{url.split('://')[-1]})"
            )
        if allow_insecure:
            continue
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise InsecureEndpoint(
                f"{name} is plain HTTP to {parts.hostname}: use https, or set "
                "USERSTORE_ALLOW_INSECURE_ENDPOINT=true for a trusted local network"
            )
