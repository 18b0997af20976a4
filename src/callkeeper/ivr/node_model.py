"""The IVR node's settings, its record of a call, and the SIP facts it advertises.

One job: the data the node's modules share (node.py, node_registration.py, node_calls.py,
node_runner.py), in a module of its own so that each can import it without importing the node.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from callkeeper.ivr.interpreter import Interpreter
from callkeeper.media.g711 import Codec
from callkeeper.sdp.model import SessionDescription
from callkeeper.sip.dialog import Dialog
from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerSettings
from callkeeper.sip.transport import Flow

SESSION_HEADER = "X-Callkeeper-Session"
"""The header the call manager carries a session id in (`callkeeper.calls.dialing`)."""
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY, REFER"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    node: str  # the node's name (`--node`)
    user: str  # the IVR user it registers as
    password: str | None
    domain: str  # the call manager's SIP domain
    registrar: tuple[str, int]  # the call manager's UDP address
    local: tuple[str, int]  # our SIP socket
    media_host: str  # the address in our SDP
    expires: int = 300
    user_agent: str = "callkeeper-ivr"
    timers: TimerSettings = field(default_factory=TimerSettings)

    @property
    def instance(self) -> str:
        """`+sip.instance`: stable per node name, so a restarted node is the same endpoint."""
        return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'callkeeper-ivr:' + self.node)}>"


@dataclass(frozen=True, slots=True)
class MediaChoice:
    remote: tuple[str, int]
    codec: Codec
    payload_type: int
    telephone_event: int | None


@dataclass(slots=True, eq=False)
class IvrCall:
    id: str  # the Call-ID
    dialog: Dialog
    flow: Flow
    local_port: int
    offer: SessionDescription | None
    media: MediaChoice | None
    invite: Request
    invite_transaction: int | None
    session: str | None = None
    runner: Interpreter | None = None
    step: str | None = None
    answer: Response | None = None  # our 2xx until its ACK arrives
    retransmit_interval: float = 0.0
    retransmit_deadline: float = 0.0
    sdp_version: int = 1
    ended: bool = False
    pending_digits: list[str] = field(default_factory=list)
