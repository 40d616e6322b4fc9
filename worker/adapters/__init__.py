"""The adapters: one per AWS service, each the only code that calls it.

Each implements a port of `userstore.worker.ports` over aiobotocore, every call through
`userstore.worker.aws.call` (retries, then translation): no botocore type leaves an adapter, and
every failure becomes an error of `userstore.worker.errors`.
"""
