"""What happened in an IVR session (`Interpreter.next_event()`): for logs, the API's event
stream (`ivr.step`, `ivr.resumed`) and tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepEntered:
    session_id: str
    step: str
    kind: str
    resumed: bool = False  # the first step after a resume from a checkpoint


@dataclass(frozen=True, slots=True)
class SessionResumed:
    """A checkpoint was loaded: the session continues at `step` with `digits` kept."""

    session_id: str
    step: str
    digits: str
    prompt_offset: float  # where the prompt replays from (0.0 unless resume_from_offset)


@dataclass(frozen=True, slots=True)
class DigitsCollected:
    session_id: str
    step: str
    variable: str
    value: str


@dataclass(frozen=True, slots=True)
class CollectFailed:
    """An attempt failed: `cause` is "timeout" (too few digits in time) or "invalid"."""

    session_id: str
    step: str
    cause: str
    retries_left: int  # after this failure; 0 means the step gives up


@dataclass(frozen=True, slots=True)
class RecordingFinished:
    session_id: str
    step: str
    file: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session is over: "transferred", a hangup step's reason, "caller hung up", or
    "no valid input" when a collect step gave up with nowhere to go."""

    session_id: str
    reason: str
    variables: Mapping[str, str]
    transfer_target: str | None = None


IvrEvent = (
    StepEntered
    | SessionResumed
    | DigitsCollected
    | CollectFailed
    | RecordingFinished
    | SessionEnded
)
