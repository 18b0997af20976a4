"""What an IVR node's core asks its io layer to do, and what it reports: small frozen classes.

Wire commands are `callkeeper.sip.transport.Transmit`; the rest are here. Calls are named by
their SIP Call-ID (`call`), sessions by the id the node gives them in `X-Callkeeper-Session`.
"""

from __future__ import annotations

from dataclasses import dataclass

from callkeeper.media.g711 import Codec

# --- media -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenMedia:
    """Start the call's RTP: our socket is `local_port` (from the node's port source); send
    G.711 `codec` with `payload_type` to `remote`; `telephone_event` is the RFC 4733 payload
    type to read digits from (None: the caller offered none)."""

    call: str
    local_port: int
    remote: tuple[str, int]
    codec: Codec
    payload_type: int
    telephone_event: int | None


@dataclass(frozen=True, slots=True)
class UpdateMedia:
    """A re-INVITE changed where the call's RTP goes (same local port)."""

    call: str
    remote: tuple[str, int]
    codec: Codec
    payload_type: int
    telephone_event: int | None


@dataclass(frozen=True, slots=True)
class PlayPrompt:
    """Play prompt `name` (the WAV `file`) into the call from `offset` seconds in; report
    progress with `IvrNode.prompt_progress(call, offset)` and the end with
    `IvrNode.prompt_finished(call, now)`."""

    call: str
    name: str
    file: str
    offset: float


@dataclass(frozen=True, slots=True)
class StopPrompt:
    call: str


@dataclass(frozen=True, slots=True)
class StartRecord:
    """Record what the caller sends into `file` (relative: the node's recordings folder)."""

    call: str
    file: str
    max_seconds: float


@dataclass(frozen=True, slots=True)
class StopRecord:
    call: str


@dataclass(frozen=True, slots=True)
class CloseMedia:
    """The call is over: stop playing and close its RTP socket."""

    call: str


# --- the checkpoint store -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadCheckpoint:
    """Read session `session`'s checkpoint; answer with `IvrNode.checkpoint_loaded(call, ...)`."""

    call: str
    session: str


@dataclass(frozen=True, slots=True)
class SaveCheckpoint:
    """Store `data` (an encoded `checkpoint.Envelope`) under the session id."""

    session: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DeleteCheckpoint:
    """Remove the session's checkpoint if it is still `owner`'s (a node that was cut off and
    comes back must not delete the checkpoint another node resumed the session from)."""

    session: str
    owner: str


NodeCommand = (
    OpenMedia | UpdateMedia | PlayPrompt | StopPrompt | StartRecord | StopRecord | CloseMedia
)
StoreCommand = LoadCheckpoint | SaveCheckpoint | DeleteCheckpoint


# --- events (for the log) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registered:
    """The call manager accepted our registration (`flow_timer`: its keep-alive interval;
    `challenged`: it asked for digest credentials first)."""

    expires: int
    flow_timer: int | None
    challenged: bool = False


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    status: int
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class FlowLost:
    """No keep-alive answer from the call manager for a while: the node re-registers and
    gives up its calls (the call manager has moved them to another node by now)."""

    silent_for: float
    calls: int


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call: str
    session: str
    resumed: bool


@dataclass(frozen=True, slots=True)
class SessionResumed:
    """A session another node started continues here, from its checkpoint: at `step`, with
    `digits` of the current collect kept, its prompt replayed from `prompt_offset`."""

    call: str
    session: str
    step: str
    digits: str
    prompt_offset: float
    saved_by: str


@dataclass(frozen=True, slots=True)
class SessionRestarted:
    """The INVITE named a session we cannot resume (`reason`): a fresh one starts instead."""

    call: str
    asked: str
    session: str
    reason: str


@dataclass(frozen=True, slots=True)
class StepEntered:
    call: str
    session: str
    step: str
    kind: str
    resumed: bool


@dataclass(frozen=True, slots=True)
class CollectStarted:
    """A collect step waits for digits; `digits` were entered before (kept across failover)."""

    call: str
    session: str
    step: str
    digits: str


@dataclass(frozen=True, slots=True)
class DigitsCollected:
    call: str
    session: str
    step: str
    variable: str
    value: str


@dataclass(frozen=True, slots=True)
class CollectFailed:
    call: str
    session: str
    step: str
    cause: str
    retries_left: int


@dataclass(frozen=True, slots=True)
class DigitReceived:
    call: str
    session: str | None
    digit: str
    via: str  # "info" or "rtp"


@dataclass(frozen=True, slots=True)
class SessionEnded:
    call: str
    session: str
    reason: str
    variables: dict[str, str]
    transfer_target: str | None = None


@dataclass(frozen=True, slots=True)
class CallEnded:
    call: str
    reason: str


NodeEvent = (
    Registered
    | RegistrationFailed
    | FlowLost
    | CallAnswered
    | SessionResumed
    | SessionRestarted
    | StepEntered
    | CollectStarted
    | DigitsCollected
    | CollectFailed
    | DigitReceived
    | SessionEnded
    | CallEnded
)
