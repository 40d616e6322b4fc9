"""Settings for tests: resource names of their own per test, provisioned on an emulator, and the
environment a process or a Lambda function would be configured with."""

from __future__ import annotations

import uuid

from tests.harness.external import run_prefix
from userstore.worker.settings import KeyMode, Settings


def make_settings(
    endpoint: str, key_mode: KeyMode = KeyMode.KMS, *, fifo: bool = True, **extra: object
) -> Settings:
    """Settings with resource names of their own, so tests never share state. Against an external
    target (tests/harness/external.py) every name starts with the run prefix, the payload and
    storage keys' aliases included (the run's own, shared by its tests as the defaults are)."""
    tag = uuid.uuid4().hex[:10]
    suffix = ".fifo" if fifo else ""
    prefix = run_prefix()
    if prefix:
        extra = {
            "payload_kms_key": f"alias/{prefix}userstore-payload",
            "storage_kms_key": f"alias/{prefix}userstore-storage",
            **extra,
        }
    return Settings(
        aws_endpoint_url=endpoint,
        aws_region="eu-west-2",
        **extra,  # type: ignore[arg-type]
        table=f"{prefix}users-{tag}",
        meta_table=f"{prefix}materials-{tag}",
        state_table=f"{prefix}state-{tag}",
        queue=f"{prefix}events-{tag}{suffix}",
        dlq=f"{prefix}events-dlq-{tag}{suffix}",
        kms_key=f"alias/{prefix}userstore-{tag}",
        key_mode=key_mode,
        wait_time_s=1,
        visibility_timeout_s=30,
        aws_max_attempts=3,
    )


async def provision_settings(settings: Settings) -> Settings:
    from userstore.worker.app import aws_clients
    from userstore.worker.provision import provision

    async with aws_clients(settings) as clients:
        await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a Lambda function would be configured with for these settings."""
    env: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        alias = field.validation_alias
        key = (
            (alias if isinstance(alias, str) else alias.choices[0])  # type: ignore[union-attr]
            if alias is not None
            else f"USERSTORE_{name.upper()}"
        )
        env[str(key)] = str(value)
    return env
