"""Plain HTTP only to loopback, unless explicitly allowed."""

from __future__ import annotations

import pytest

from userstore.worker.endpoints import InsecureEndpoint, check_endpoints


@pytest.mark.parametrize(
    "url",
    [
        None,
        "https://dynamodb.eu-west-2.amazonaws.com",
        "http://127.0.0.1:4566",
        "http://127.8.9.10:5000",
        "http://localhost:4566",
        "http://[::1]:4566",
        "https://10.0.0.5:4566",
    ],
)
def test_accepted(url: str | None) -> None:
    check_endpoints(url, {}, allow_insecure=False)


@pytest.mark.parametrize(
    ("url", "environ"),
    [
        ("http://10.0.0.5:4566", {}),
        ("http://localstack:4566", {}),
        (None, {"AWS_ENDPOINT_URL_KMS": "http://kms.internal:80"}),
        ("http://127.0.0.1:1", {"AWS_ENDPOINT_URL": "http://192.168.1.2"}),
    ],
)
def test_refused_unless_allowed(url: str | None, environ: dict[str, str]) -> None:
    with pytest.raises(InsecureEndpoint, match="plain HTTP"):
        check_endpoints(url, environ, allow_insecure=False)
    check_endpoints(url, environ, allow_insecure=True)
