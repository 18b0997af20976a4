"""Calls and their legs, as the B2BUA and (later) the recovery engine see them.

A call has an A leg (the caller's dialog, where we are the UAS) and a B leg (the callee's
dialog, where we are the UAC). While the call is set up, the B side may be several forks, one
per contact of the callee; the first to answer becomes the B leg. Owning both dialogs is what
lets callkeeper later hold one side while it recovers the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from callkeeper.calls.session_timer import SessionTimer
from callkeeper.sip.dialog import Dialog
from callkeeper.sip.message import Request, Response
from callkeeper.sip.transport import Flow


class CallState(Enum):
    SETUP = "setup"
    ACTIVE = "active"
    HOLDING = "holding"
    RESUMING = "resuming"
    TRANSFERRING = "transferring"
    ENDED = "ended"


class LegState(Enum):
    TRYING = "trying"  # INVITE sent or received, nothing back yet
    EARLY = "early"  # a provisional response
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True, eq=False)
class Leg:
    id: str
    is_caller: bool  # the A leg: we are the UAS of its dialog
    flow: Flow  # where requests for this leg go
    user: str | None = None
    endpoint: str | None = None  # the registration (binding key) or contact it reached
    state: LegState = LegState.TRYING
    dialog: Dialog | None = None
    invite: Request | None = None  # the A leg's received INVITE / a B leg's sent INVITE
    invite_transaction: int | None = None
    call_id: str = ""  # a B leg's own Call-ID (kept when `invite` is released)
    local_tag: str = ""
    local_sdp: bytes | None = None  # the last SDP we sent on this leg
    remote_sdp: bytes | None = None
    final_response: Response | None = None  # a B fork's failure, for best-response choice
    ack: Request | None = None  # the ACK we sent for this leg's latest 2xx (resent on retransmits)
    cancelled: bool = False
    session_timer: SessionTimer | None = None
    allows_update: bool = False  # the peer listed UPDATE in Allow: refresh without SDP
    session: str | None = None  # an IVR node's session id (X-Callkeeper-Session in its 2xx)
    keys: str = ""  # the last keys it sent (SIP INFO), for the feature code mid-call
    keys_at: float = 0.0
    # A B fork to a host name: the addresses still to try, in order, when the current one fails
    # (RFC 3263 §4.3, forking.py), and the highest provisional status the current one sent.
    alternates: tuple[Flow, ...] = ()
    provisional: int = 0


@dataclass(slots=True, eq=False)
class Relay:
    """An in-dialog request received on one leg and forwarded on the other, awaiting its answer."""

    call: Call
    from_leg: Leg
    to_leg: Leg
    server_transaction: int
    request: Request


@dataclass(slots=True, eq=False)
class Call:
    id: str
    a: Leg
    created: float
    state: CallState = CallState.SETUP
    b: Leg | None = None
    forks: list[Leg] = field(default_factory=list)
    answered: float | None = None
    ended: float | None = None
    recoveries: int = 0
    callee: str | None = None
    end_reason: str = ""
    # An ACK owed to the B leg once the A leg ACKs our 2xx (it may carry a late SDP answer).
    awaiting_ack_from: Leg | None = None
    ack_target: Leg | None = None  # the leg that ACK is relayed to (None: owed to nobody)
    # Our 2xx to the A leg, retransmitted until its ACK arrives (RFC 3261 §13.3.1.4).
    unacked_response: Response | None = None
    retransmit_interval: float = 0.0
    retransmit_deadline: float = 0.0

    def legs(self) -> list[Leg]:
        legs = [self.a]
        if self.b is not None:
            legs.append(self.b)
        legs.extend(fork for fork in self.forks if fork is not self.b)
        return legs

    def other(self, leg: Leg) -> Leg | None:
        if leg is self.a:
            return self.b
        return self.a
