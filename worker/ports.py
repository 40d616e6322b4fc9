"""The ports: what the domain needs of each AWS service, as small Protocols.

The adapters in `userstore.worker.adapters` implement them over AWS; `tests/fakes` implements
them in memory, so the handler, the settlement policy and the sweep are unit-tested with no
emulator. A port speaks the domain's language (records, messages, leases), never botocore's.
"""

from __future__ import annotations
