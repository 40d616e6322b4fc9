"""LocalStack ready.d hook: create what `userstore provision` creates, from the same definition.

The definition is the worker's own worker/resources.json (USERSTORE_RESOURCES_FILE; compose
mounts it at the default path). Names and queue settings come from the same environment
variables as the worker's settings (USERSTORE_TABLE, ...), with the defaults in that file.

Runs where the emulator runs hooks: inside LocalStack's own Python process (exec'd, so no
__file__ or __name__ guard), or as `python userstore.py` (ministack). Needs only botocore, which
both have. Idempotent: what exists is kept, and brought in line with the definition the way
`userstore provision` does it (worker/provision.py: tables' server-side encryption, deletion
protection and point-in-time recovery; every queue attribute). A failure raises, which marks the
hook failed.
"""

import json
import os
import time

import botocore.session
from botocore.exceptions import ClientError

DEFAULT_RESOURCES_FILE = "/etc/localstack/userstore/resources.json"
TABLE_EXTRAS = ("role", "ttl_attribute", "point_in_time_recovery")
# What pydantic reads as a bool (worker/resources.py has the same two sets).
TRUE_WORDS = frozenset({"1", "on", "t", "true", "y", "yes"})
FALSE_WORDS = frozenset({"0", "off", "f", "false", "n", "no"})


def _flag(text):
    word = str(text).strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(f"not a flag: {text!r}")


def _render(node, values):
    if isinstance(node, str) and node.startswith("${") and node.endswith("}"):
        return values[node[2:-1]]
    if isinstance(node, dict):
        return {key: _render(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_render(value, values) for value in node]
    return node


def _attributes(spec):
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in spec.get("Attributes", {}).items()
    }


def _fifo(definition, name):
    return dict(definition["fifo_attributes"]) if name.endswith(".fifo") else {}


def _text(default):
    # As the worker renders its settings: a flag as true or false.
    return ("true" if default else "false") if isinstance(default, bool) else str(default)


def _code(exc):
    return exc.response.get("Error", {}).get("Code", "")


def _ensure_key(kms, alias, create):
    try:
        return kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    except ClientError as exc:
        if _code(exc) != "NotFoundException":
            raise
    created = kms.create_key(**create)["KeyMetadata"]
    kms.create_alias(AliasName=alias, TargetKeyId=created["KeyId"])
    return created["Arn"]


def _active(ddb, name):
    for _ in range(120):
        table = ddb.describe_table(TableName=name)["Table"]
        if table["TableStatus"] == "ACTIVE":
            return table
        time.sleep(0.5)
    raise TimeoutError(f"table {name} did not become ACTIVE")


def _table_updates(table, create):
    updates = []
    sse = create.get("SSESpecification")
    if sse is not None:
        now = table.get("SSEDescription") or {}
        enabled = now.get("Status") in ("ENABLED", "UPDATING")
        same = (
            enabled
            and now.get("SSEType") == sse.get("SSEType", "KMS")
            and now.get("KMSMasterKeyArn") == sse.get("KMSMasterKeyId")
            if sse.get("Enabled")
            else not enabled
        )
        if not same:
            updates.append({"SSESpecification": sse})
    if "DeletionProtectionEnabled" in create:
        wanted = bool(create["DeletionProtectionEnabled"])
        if bool(table.get("DeletionProtectionEnabled", False)) != wanted:
            updates.append({"DeletionProtectionEnabled": wanted})
    return updates


def _ensure_table(ddb, spec):
    create = {k: v for k, v in spec.items() if k not in TABLE_EXTRAS}
    name = create["TableName"]
    try:
        ddb.create_table(**create)
    except ClientError as exc:
        if _code(exc) != "ResourceInUseException":
            raise
    table = _active(ddb, name)
    for update in _table_updates(table, create):
        ddb.update_table(TableName=name, **update)
        _active(ddb, name)
    if "ttl_attribute" in spec:
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec["ttl_attribute"]},
            )
    if "point_in_time_recovery" in spec:
        wanted = _flag(spec["point_in_time_recovery"])
        backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        status = backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
        if (status == "ENABLED") != wanted:
            ddb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": wanted},
            )


def _ensure_queue(sqs, definition, queue, encryption):
    name = queue["QueueName"]
    attributes = _attributes(queue) | encryption
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if _code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        create = _fifo(definition, name) | attributes
        url = sqs.create_queue(QueueName=name, Attributes=create)["QueueUrl"]
    names = ["QueueArn", "KmsMasterKeyId", "Policy"]
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    if current.get("KmsMasterKeyId") and "KmsMasterKeyId" not in encryption:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"KmsMasterKeyId": ""})
    # Content-based deduplication too (EventBridge needs it); not FifoQueue, fixed at creation.
    fixed = set(definition["fixed_queue_attributes"])
    settable = {k: v for k, v in (_fifo(definition, name) | attributes).items() if k not in fixed}
    policy = _policy(definition, current.get("Policy"), current["QueueArn"])
    sqs.set_queue_attributes(QueueUrl=url, Attributes=settable | {"Policy": policy})
    return current["QueueArn"]


def _policy(definition, current, arn):
    """Ours, beside any other statement (an EventBridge or SNS grant), as provision does it."""
    ours = _render(definition["queue_policy"], {"queue_arn": arn})
    sids = {statement.get("Sid") for statement in ours["Statement"]}
    try:
        existing = json.loads(current) if current else {}
    except ValueError:
        existing = {}
    statements = existing.get("Statement", []) if isinstance(existing, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    kept = [s for s in statements if isinstance(s, dict) and s.get("Sid") not in sids]
    return json.dumps(ours | {"Statement": [*ours["Statement"], *kept]})


def _ensure_queues(sqs, definition, values):
    modes = definition["queue_encryption"]
    encryption = _attributes({"Attributes": _render(modes[values["queue_encryption"]], values)})
    dlq = _render(definition["dead_letter_queue"], values)
    dlq_arn = _ensure_queue(sqs, definition, dlq, encryption)
    queue = _render(definition["queue"], values | {"dlq_arn": dlq_arn})
    _ensure_queue(sqs, definition, queue, encryption)


def provision_from_definition():
    path = os.environ.get("USERSTORE_RESOURCES_FILE", DEFAULT_RESOURCES_FILE)
    with open(path, encoding="utf-8") as file:
        definition = json.load(file)
    values = {
        name: os.environ.get(f"USERSTORE_{name.upper()}", _text(default))
        for name, default in definition["defaults"].items()
    }
    if values["queue"].endswith(".fifo") != values["dlq"].endswith(".fifo"):
        raise ValueError("the queue and its dead-letter queue must both be FIFO or both standard")
    # The worker's region (its settings read AWS_REGION, then AWS_DEFAULT_REGION).
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "eu-west-2"
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "http://localhost:4566")
    session = botocore.session.get_session()
    # Emulators accept any credentials; real ones, if configured, are used as they are.
    credentials = {}
    if session.get_credentials() is None:
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}

    def client(service):
        return session.create_client(
            service, region_name=region, endpoint_url=endpoint, **credentials
        )

    kms = client("kms")
    arns = {}
    for key in definition["keys"]:
        key = _render(key, values)
        arns[key["role"]] = _ensure_key(kms, key["alias"], key["create"])
    values = values | {"storage_key_arn": arns["storage"]}
    ddb = client("dynamodb")
    for table in definition["tables"]:
        _ensure_table(ddb, _render(table, values))
    _ensure_queues(client("sqs"), definition, values)
    print(f"userstore resources ready: table {values['table']}, queue {values['queue']}")


provision_from_definition()
