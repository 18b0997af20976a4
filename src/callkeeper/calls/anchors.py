"""What the B2BUA and the recovery engine ask of a media anchor, whichever backend carries it out.

Two anchors implement it: `MediaAnchor` (the built-in relay: one port pair per leg, chosen from
`media.rtp_ports`) and `RtpengineAnchor` (rtpengine: one port pair per call side, set up in
advance). Both rewrite SDP synchronously — the ports are known before the SDP crosses — and queue
commands for the io layer to carry out.
"""

from __future__ import annotations

from typing import Protocol

from callkeeper.calls.media_anchor import MediaCommand
from callkeeper.calls.model import Call, Leg
from callkeeper.calls.rtpengine_anchor import RtpengineCommand
from callkeeper.sdp.model import SessionDescription


class Anchor(Protocol):
    def next_command(self) -> MediaCommand | RtpengineCommand | None: ...

    def __len__(self) -> int: ...

    def rewrite(self, call: Call, from_leg: Leg, to_leg: Leg, body: bytes) -> bytes:
        """`body` came from `from_leg` and goes to `to_leg`: learn where `from_leg` receives,
        and name the port `to_leg` must send to. Unparseable SDP passes through unchanged."""
        ...

    def learn(self, call: Call, leg: Leg, session: SessionDescription | bytes) -> None:
        """Where `leg`'s phone receives (its SDP), without forwarding the SDP anywhere."""
        ...

    def has_side(self, leg: Leg) -> bool: ...

    def connect(self, leg_a: Leg, leg_b: Leg) -> None:
        """Media flows between the two legs again; prompts playing into either stop."""
        ...

    def play(self, leg: Leg, prompts: tuple[str, ...], loop: str | None) -> bool:
        """Prompts then a loop into `leg`'s phone; False when this anchor cannot."""
        ...

    def record(
        self, call: Call, leg: Leg, user: str, caller: str | None, limits: tuple[float, float]
    ) -> bool:
        """Take a voicemail message from `leg`; False when this anchor cannot."""
        ...

    def release_leg(self, leg: Leg) -> None: ...

    def side_port(self, leg: Leg) -> int | None:
        """The port `leg`'s phone sends to, kept with a call's snapshot; None when the anchor
        cannot give the same port to a restarted process."""
        ...

    def restore_side(self, call: Call, leg: Leg, port: int) -> bool:
        """A restored call's leg takes its old port back (its phone still sends there) and
        its peer from its SDP; False when the port cannot be had."""
        ...

    def release_call(self, call_id: str) -> None: ...
