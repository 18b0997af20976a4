"""What an IVR node stores per session: the interpreter's checkpoint in an `Envelope` that names
the script and who wrote it, msgpack-encoded, under the `ivr` namespace.

One job: the stored format. The node writes and reads it (node_runner.py, node_calls.py); the
API reads it to show sessions (api/app.py, api/ivr_watch.py) without importing the node.
"""

from __future__ import annotations

import msgspec

CHECKPOINT_NAMESPACE = "ivr"
"""The store namespace of IVR checkpoints (key: the session id)."""


class Envelope(msgspec.Struct, frozen=True):
    """What is stored per session: the interpreter's checkpoint and who wrote it.

    `script` lets a node refuse a session of another script (a foreign id); `owner` (node/call)
    lets a node delete only a checkpoint it wrote itself."""

    script: str
    owner: str
    node: str
    step: str | None
    data: bytes


def encode_envelope(envelope: Envelope) -> bytes:
    return msgspec.msgpack.encode(envelope)


def decode_envelope(data: bytes) -> Envelope:
    """Raises `msgspec.DecodeError` (a ValueError) for bytes that are not an Envelope."""
    return msgspec.msgpack.decode(data, type=Envelope)
