"""KeyRef: which key sealed a record, parsed once and compared by value.

Every sealed item carries its key reference as text in the signed-only `key_ref` attribute:

    kms:<key ARN>                  `kms` mode: a data key per record, wrapped under this KMS key
    materials:<name>#<version>     `cached` mode: a material version of the meta store

The text is read without verification (it is how rotation finds stale records without
decrypting), so parsing refuses anything that is not exactly one of those forms: a malformed
reference is a sign of tampering, never a reason to call KMS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# arn:<partition>:kms:<region>:<account>:key/<key id>; no alias ARNs: a record names a key.
_KMS_ARN = re.compile(r"arn:(aws[a-z-]*):kms:([a-z0-9-]+):(\d{12}):key/([A-Za-z0-9-]{1,128})")
_MATERIALS = re.compile(r"([^#\s]{1,256})#(0|[1-9]\d{0,9})")


class KeyKind(StrEnum):
    KMS = "kms"
    MATERIALS = "materials"


class InvalidKeyRef(ValueError):
    """Text that is no key reference (its message never repeats the text)."""


@dataclass(frozen=True, order=True)
class KeyRef:
    kind: KeyKind
    name: str  # kms: the key ARN; materials: the material name
    version: int = 0  # materials only

    @classmethod
    def kms(cls, arn: str) -> KeyRef:
        if not _KMS_ARN.fullmatch(arn):
            raise InvalidKeyRef("not a KMS key ARN")
        return cls(KeyKind.KMS, arn)

    @classmethod
    def materials(cls, name: str, version: int) -> KeyRef:
        if not _MATERIALS.fullmatch(f"{name}#{version}"):
            raise InvalidKeyRef("not a material name and version")
        return cls(KeyKind.MATERIALS, name, version)

    @classmethod
    def parse(cls, text: str) -> KeyRef:
        kind, colon, rest = text.partition(":")
        if colon and kind == KeyKind.KMS:
            return cls.kms(rest)
        if colon and kind == KeyKind.MATERIALS:
            matched = _MATERIALS.fullmatch(rest)
            if matched:
                return cls(KeyKind.MATERIALS, matched[1], int(matched[2]))
        raise InvalidKeyRef("not a key reference (kms:<ARN> or materials:<name>#<version>)")

    @property
    def arn(self) -> str:
        """The KMS key ARN (kms references only)."""
        if self.kind is not KeyKind.KMS:
            raise InvalidKeyRef("a material version has no KMS key ARN")
        return self.name

    @property
    def account_region(self) -> tuple[str, str]:
        """(account, region) of a KMS key reference."""
        matched = _KMS_ARN.fullmatch(self.arn)
        assert matched is not None  # checked on construction
        return matched[3], matched[2]

    @property
    def region(self) -> str:
        return self.account_region[1]

    def __str__(self) -> str:
        if self.kind is KeyKind.KMS:
            return f"kms:{self.name}"
        return f"materials:{self.name}#{self.version}"


def parse_or_none(text: str) -> KeyRef | None:
    try:
        return KeyRef.parse(text)
    except InvalidKeyRef:
        return None
