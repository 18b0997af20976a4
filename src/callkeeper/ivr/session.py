"""Where one caller is in a script, as the record that IVR nodes checkpoint to the shared store.

`Session` is a `msgspec.Struct` so that a checkpoint is a compact, validating msgpack map:
`encode_checkpoint` at every step and digit, `decode_checkpoint` on the node that takes the call
over. It is a map keyed by field name (not msgspec's array form) so a node running a newer
callkeeper can add fields with defaults and an older node still reads the record (unknown
fields are ignored). Damaged bytes, or values out of range, raise `CheckpointError` instead of
resuming half a session.

Times are deliberately absent: a deadline on one node's clock means nothing on another's, so a
resumed session re-arms its timers from the `now` of the resume.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from callkeeper.ivr.errors import CheckpointError
from callkeeper.ivr.states import Phase

CHECKPOINT_VERSION = 1
HISTORY_LIMIT = 32
"""How many of the latest steps a session remembers (a caller looping in a menu stays bounded)."""

_DTMF = Annotated[str, msgspec.Meta(pattern=r"^[0-9*#A-D]*$", max_length=64)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """One caller's place in a script.

    - `step`: the current step's id; `phase`: what that step is doing (`states.Phase`).
    - `prompt_offset`: seconds of the current prompt already played (from `prompt_progress`);
      `prompt_done`: the prompt finished, or a digit stopped it.
    - `digits`: keys entered so far in the current collect step (kept across a failover).
    - `retries_left`: retries left in the current collect step.
    - `variables`: everything collected, set or recorded so far.
    - `history`: the latest `HISTORY_LIMIT` step ids entered, oldest first.
    - `ended`: the reason, once the session is over.
    """

    session_id: str
    script: str
    step: str
    phase: Phase = Phase.IDLE
    prompt_offset: _NonNegative = 0.0
    prompt_done: bool = False
    digits: _DTMF = ""
    retries_left: Annotated[int, msgspec.Meta(ge=0)] = 0
    variables: dict[str, str] = msgspec.field(default_factory=dict)
    history: tuple[str, ...] = ()
    ended: str | None = None
    version: int = CHECKPOINT_VERSION


def new_session(
    session_id: str, script: str, start: str, variables: dict[str, str] | None = None
) -> Session:
    """A session about to enter `start`; `variables` are what the node knows (caller, ...)."""
    return Session(
        session_id=session_id, script=script, step=start, variables=dict(variables or {})
    )


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Session)


def encode_checkpoint(session: Session) -> bytes:
    return _ENCODER.encode(session)


def decode_checkpoint(data: bytes) -> Session:
    """The session in `data`; raises `CheckpointError` when the bytes are not one."""
    try:
        session = _DECODER.decode(data)
    except msgspec.DecodeError as error:
        raise CheckpointError(f"damaged checkpoint: {error}") from None
    if session.version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint version {session.version} is newer than this node's {CHECKPOINT_VERSION}"
        )
    return session
