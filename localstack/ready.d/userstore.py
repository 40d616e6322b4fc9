"""LocalStack ready.d hook: create what `userstore provision` creates, from the same definition.

The definition is the worker's own worker/resources.json (USERSTORE_RESOURCES_FILE; compose
mounts it at the default path). Names and queue settings come from the same environment
variables as the worker's settings (USERSTORE_TABLE, ...), with the defaults in that file.

Runs where the emulator runs hooks: inside LocalStack's own Python process (exec'd, so no
__file__ or __name__ guard), or as `python userstore.py` (ministack). Needs only botocore, which
both have. Idempotent: what exists is kept. A failure raises, which marks the hook failed.
"""

import json
import os
import time

import botocore.session
from botocore.exceptions import ClientError

DEFAULT_RESOURCES_FILE = "/etc/localstack/userstore/resources.json"


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


def _ensure_table(ddb, spec):
    create = {k: v for k, v in spec.items() if k not in ("role", "ttl_attribute")}
    name = create["TableName"]
    try:
        ddb.create_table(**create)
    except ClientError as exc:
        if _code(exc) != "ResourceInUseException":
            raise
    for _ in range(120):
        if ddb.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE":
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"table {name} did not become ACTIVE")
    if "ttl_attribute" in spec:
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec["ttl_attribute"]},
            )


def _ensure_queues(sqs, definition, values):
    dlq = _render(definition["dead_letter_queue"], values)
    name = dlq["QueueName"]
    attributes = _fifo(definition, name) | _attributes(dlq)
    dlq_url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    queue = _render(definition["queue"], values | {"dlq_arn": arn["Attributes"]["QueueArn"]})
    name = queue["QueueName"]
    url = sqs.create_queue(QueueName=name, Attributes=_fifo(definition, name))["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=_attributes(queue))


def provision_from_definition():
    path = os.environ.get("USERSTORE_RESOURCES_FILE", DEFAULT_RESOURCES_FILE)
    with open(path, encoding="utf-8") as file:
        definition = json.load(file)
    values = {
        name: os.environ.get(f"USERSTORE_{name.upper()}", str(default))
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
    for key in definition["keys"]:
        key = _render(key, values)
        _ensure_key(kms, key["alias"], key["create"])
    ddb = client("dynamodb")
    for table in definition["tables"]:
        _ensure_table(ddb, _render(table, values))
    _ensure_queues(client("sqs"), definition, values)
    print(f"userstore resources ready: table {values['table']}, queue {values['queue']}")


provision_from_definition()
