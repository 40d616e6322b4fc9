"""The numeric bounds of the user event contract (schema version 1).

The field types (``events.fields``, ``events.attributes``) enforce them and the JSON Schemas
publish them.
"""

from typing import Final

__all__ = [
    "ATTRIBUTE_NAME_PATTERN",
    "MAX_ADDRESS_FIELD_LENGTH",
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTES_JSON_BYTES",
    "MAX_ATTRIBUTE_INTEGER",
    "MAX_ATTRIBUTE_LIST_ITEMS",
    "MAX_ATTRIBUTE_LIST_ITEM_LENGTH",
    "MAX_ATTRIBUTE_NAME_LENGTH",
    "MAX_ATTRIBUTE_STRING_LENGTH",
    "MAX_EMAIL_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PATCH_ATTRIBUTES",
    "MAX_SEALED_LENGTH",
    "MAX_STREET_ADDRESS_LENGTH",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
]

SCHEMA_VERSION: Final = 1
SUPPORTED_SCHEMA_VERSIONS: Final = frozenset({1})

MAX_ID_LENGTH: Final = 128
MAX_EMAIL_LENGTH: Final = 254
MAX_NAME_LENGTH: Final = 256
MAX_ADDRESS_FIELD_LENGTH: Final = 256
MAX_STREET_ADDRESS_LENGTH: Final = 1024

MAX_ATTRIBUTES: Final = 50
# A patch may remove every existing attribute and set as many new ones.
MAX_PATCH_ATTRIBUTES: Final = 2 * MAX_ATTRIBUTES
MAX_ATTRIBUTES_JSON_BYTES: Final = 16 * 1024
MAX_ATTRIBUTE_NAME_LENGTH: Final = 64
ATTRIBUTE_NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$"
MAX_ATTRIBUTE_STRING_LENGTH: Final = 1024
# JSON consumers (JavaScript) lose precision past 2**53.
MAX_ATTRIBUTE_INTEGER: Final = 2**53
MAX_ATTRIBUTE_LIST_ITEMS: Final = 50
MAX_ATTRIBUTE_LIST_ITEM_LENGTH: Final = 256
# base64 of an aws-encryption-sdk message; it must fit an SQS body with the envelope around it.
MAX_SEALED_LENGTH: Final = 200 * 1024
