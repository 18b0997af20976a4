"""The records of a recovery in progress: the `Recovery` itself, its ringing `Attempt`s and the
re-INVITEs it sent (`OwnReinvite`).

One job: the data. The engine (recovery.py) and its helpers (recovery_resume.py,
recovery_fallback.py, recovery_bridge.py, handover.py) all read and write these; keeping them
in a module of their own lets each of those import them without importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callkeeper.calls.model import Call, Leg
from callkeeper.sip.message import Request


@dataclass(slots=True, eq=False)
class Attempt:
    """One INVITE ringing a candidate for the failed side."""

    leg: Leg
    invite: Request
    step: str
    done: bool = False  # a final response (or we gave up on it)


@dataclass(slots=True, eq=False)
class OwnReinvite:
    """A re-INVITE we sent inside a leg's dialog (hold, un-hold, resume)."""

    call_id: str
    leg: Leg
    purpose: str  # "hold", "unhold", "resume"
    ack: Request | None = None


@dataclass(slots=True, eq=False)
class Recovery:
    call: Call
    failed: Leg  # the side being brought back or replaced
    survivor: Leg
    started: float
    reason: str
    survivor_sdp: bytes | None  # the survivor's SDP from before the hold: offered to new legs
    grace_deadline: float
    steps: list[str]
    user: str | None  # whose devices the fallback chain rings
    step: str = ""
    back_at: float | None = None
    attempts: dict[int, Attempt] = field(default_factory=dict)
    resume_reinvite: int | None = None
    winner: Leg | None = None
    winner_step: str = ""
    survivor_reinvite: int | None = None
    survivor_owed: str | None = None  # a re-INVITE to send once the one in flight completes
    survivor_down: bool = False  # both parties failed: the survivor is DOWN too
    survivor_down_at: float = 0.0
    # Asked-for moves (handover.py): the old leg stays connected until the new one answers.
    keep_old_until_answer: bool = False
    referred: bool = False  # started by the failed side's REFER: report progress to it
    pickup: Leg | None = None  # the device that dialled the feature code, answered on bridging
