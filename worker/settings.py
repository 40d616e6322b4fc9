"""The one Settings object, read from the environment at the entry point and passed down."""

from __future__ import annotations

from enum import StrEnum

from pydantic import (
    AliasChoices,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import InvalidSetting

ENV_PREFIX = "USERSTORE_"


class KeyMode(StrEnum):
    """How record keys are obtained (see docs/keys.md)."""

    KMS = "kms"  # a fresh KMS data key per record write
    CACHED = "cached"  # the caching most-recent provider over a meta-store table


class QueueEncryption(StrEnum):
    """Server-side encryption of the queue and its dead-letter queue (see docs/threat-model.md)."""

    KMS = "kms"  # SSE-KMS under the storage key (USERSTORE_STORAGE_KMS_KEY)
    SQS = "sqs"  # SSE-SQS: keys owned and managed by SQS


class Settings(BaseSettings):
    """Every knob of the worker. Each field is documented in the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    # Standard AWS variables (no prefix), so boto-style setups carry over.
    aws_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    aws_region: str = Field(
        default="eu-west-2", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )

    table: str = "userstore-users"
    meta_table: str = "userstore-materials"
    state_table: str = "userstore-state"
    queue: str = "userstore-events.fifo"
    dlq: str = "userstore-events-dlq.fifo"
    kms_key: str = "alias/userstore"
    payload_kms_key: str = "alias/userstore-payload"
    # Server-side encryption of the tables and (in `kms` queue encryption) the queues.
    storage_kms_key: str = "alias/userstore-storage"
    queue_encryption: QueueEncryption = QueueEncryption.KMS
    # Keeps 35 days of every table's history, erased users' ciphertext included: the trade-off
    # is in docs/threat-model.md ("Point-in-time recovery and erasure").
    point_in_time_recovery: bool = True
    payload_key_cache_s: PositiveFloat = 300.0
    key_mode: KeyMode = KeyMode.KMS
    material_name: str = "userstore"
    material_ttl_s: PositiveFloat = 300.0

    max_in_flight: PositiveInt = 32
    crypto_threads: PositiveInt = 8
    visibility_timeout_s: PositiveInt = 60
    max_receive_count: PositiveInt = 5
    wait_time_s: int = Field(default=20, ge=0, le=20)
    drain_timeout_s: PositiveFloat = 30.0
    tombstone_ttl_s: PositiveInt = 30 * 24 * 3600
    max_clock_skew_s: PositiveInt = 300
    max_conflict_retries: PositiveInt = 8
    aws_max_attempts: PositiveInt = 5
    aws_connect_timeout_s: PositiveFloat = 5.0
    aws_read_timeout_s: PositiveFloat = 30.0
    control_poll_s: PositiveFloat = 10.0
    stream_enabled: bool = True
    stream_lease_s: PositiveFloat = 30.0
    stream_discover_every_s: PositiveFloat = 10.0
    stream_poll_idle_s: PositiveFloat = 1.0
    stream_checkpoint_every_s: NonNegativeFloat = 10.0
    stream_max_record_tries: PositiveInt = 5
    reencrypt_rate_per_s: PositiveFloat = 50.0
    sweep_lease_s: PositiveFloat = 30.0
    allow_insecure_endpoint: bool = False
    # /metrics, /healthz, /readyz. Unset: not served. Loopback by default; in a container the
    # probes and the scraper come from outside it, so set metrics_host to 0.0.0.0 there.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _long_poll_fits_read_timeout(self) -> Settings:
        # A long poll that outlasts the read timeout would fail as a timeout every idle time.
        if self.aws_read_timeout_s <= self.wait_time_s:
            raise ValueError(
                f"{variable('aws_read_timeout_s')} must be longer than {variable('wait_time_s')}"
            )
        return self


def variable(field: str) -> str:
    """The environment variable a setting is read from (the first of its choices)."""
    info = Settings.model_fields.get(field)
    alias = None if info is None else info.validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return ENV_PREFIX + field.upper()


def read_settings() -> Settings:
    """The settings from the environment; InvalidSetting naming each variable that is wrong
    and what it should be (pydantic's own message: allowed values, bounds)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                message = f"{variable(str(error['loc'][0]))}: {message}"
            problems.append(message)
        raise InvalidSetting("invalid setting: " + "; ".join(problems)) from None
