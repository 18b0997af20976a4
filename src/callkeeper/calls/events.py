"""What happened to calls: small frozen events for the API's event stream, logs and metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    caller: str | None
    callee: str | None
    at: float


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call_id: str
    endpoint: str | None  # the callee's endpoint that answered
    at: float
    caller_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    reason: str  # "caller hung up", "callee hung up", "cancelled", "486 Busy Here", ...
    at: float
    answered: bool
    endpoints: tuple[str, ...] = ()  # of the legs that were connected


CallEvent = CallStarted | CallAnswered | CallEnded


# --- the recovery engine ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallHeld:
    """One side's endpoint failed: the survivor is held while that side is recovered."""

    call_id: str
    endpoint: str | None  # the failed side's endpoint
    reason: str  # the liveness DOWN reason, or what broke the leg
    at: float


@dataclass(frozen=True, slots=True)
class CallResuming:
    """The failed endpoint is back within grace: re-attaching it."""

    call_id: str
    endpoint: str | None
    at: float
    held_seconds: float


@dataclass(frozen=True, slots=True)
class CallTransferring:
    """Grace ran out (or someone asked): ringing the next step of the fallback chain."""

    call_id: str
    step: str  # "devices", "mobile", "voicemail", "target", "resume"
    targets: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class CallRecovered:
    """The survivor is bridged again. `outcome` is resumed, transferred or voicemail."""

    call_id: str
    outcome: str
    endpoint: str | None  # the leg it is bridged to now
    new_dialog: bool  # False when the old dialog was resumed by re-INVITE
    at: float
    recovery_seconds: float  # failure → bridged again
    resume_seconds: float | None  # endpoint back → bridged again (resumed only)


@dataclass(frozen=True, slots=True)
class CallLost:
    """Nothing could take the call: the survivor was told and released."""

    call_id: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class RebootRequested:
    """A `NOTIFY Event: check-sync;reboot=true` went to an endpoint (best effort)."""

    endpoint: str
    at: float


RecoveryEvent = (
    CallHeld | CallResuming | CallTransferring | CallRecovered | CallLost | RebootRequested
)
