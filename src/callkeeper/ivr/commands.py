"""What the interpreter asks the IVR node to do (`Interpreter.next_command()`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlayPrompt:
    """Play prompt `name` (its file: `file`) from `from_offset` seconds into it; report
    `prompt_progress` while it plays (as offsets into the file) and `prompt_finished` at its end."""

    name: str
    file: str
    from_offset: float = 0.0


@dataclass(frozen=True, slots=True)
class StopPrompt:
    """Stop the prompt now (the caller barged in with a digit); no `prompt_finished` needed."""


@dataclass(frozen=True, slots=True)
class StartCollect:
    """A collect step begins (or begins again): pass the caller's DTMF keys to `digit()`.

    `digits` are keys already entered (kept across a failover); the rest is for display/logs —
    the interpreter itself applies `min_digits`, `max_digits`, `terminator` and `timeout`."""

    step: str
    min_digits: int
    max_digits: int
    terminator: str
    timeout: float
    digits: str = ""


@dataclass(frozen=True, slots=True)
class StartRecord:
    """Record the caller into `file` (relative: the node picks the folder) for at most
    `max_seconds`; the interpreter sends `StopRecord` at the limit or on the terminator key."""

    file: str
    max_seconds: float


@dataclass(frozen=True, slots=True)
class StopRecord:
    """Stop recording and keep the file."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """Ask the call manager to transfer the caller to `target` (a user or a number)."""

    target: str


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Store `data` (an encoded `Session`) under `session_id`, replacing the previous one."""

    session_id: str
    step: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DiscardCheckpoint:
    """The session ended: remove its checkpoint so no node resumes it."""

    session_id: str


IvrCommand = (
    PlayPrompt
    | StopPrompt
    | StartCollect
    | StartRecord
    | StopRecord
    | Transfer
    | Hangup
    | Checkpoint
    | DiscardCheckpoint
)
