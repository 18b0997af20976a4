"""The SDP bodies of the recovery engine's own offers, from the bytes the legs carry.

Each returns None when there is nothing sound to offer (no SDP on the call, or SDP we cannot
parse — the B2BUA relays bodies it does not understand, so that can happen); the engine then
skips the renegotiation rather than send a broken body.
"""

from __future__ import annotations

from callkeeper.sdp import (
    Direction,
    SdpError,
    make_hold_offer,
    make_unhold_offer,
    parse_sdp,
    rebase_origin,
)
from callkeeper.sdp.hold import held_direction
from callkeeper.sdp.model import SessionDescription


def parse_or_none(body: bytes | None) -> SessionDescription | None:
    """The parsed SDP, or None for no body or one we cannot parse."""
    if not body:
        return None
    try:
        return parse_sdp(body)
    except SdpError:
        return None


def hold(last_sent: bytes | None) -> bytes | None:
    """The hold re-offer for a party, from the last SDP we sent it."""
    session = parse_or_none(last_sent)
    return make_hold_offer(session).to_bytes() if session is not None else None


def unhold(new_party: bytes | None, last_sent: bytes | None) -> bytes | None:
    """Connect a party to the streams in `new_party`, under the `o=` line it knows from us."""
    new, previous = parse_or_none(new_party), parse_or_none(last_sent)
    if new is None or previous is None:
        return None
    return make_unhold_offer(new, previous).to_bytes()


def reoffer(survivor: bytes | None, last_sent: bytes | None) -> bytes | None:
    """A re-INVITE offer on a returning phone's old dialog: the survivor's streams, under the
    `o=` line we used on that dialog (version + 1)."""
    new, previous = parse_or_none(survivor), parse_or_none(last_sent)
    if new is None:
        return None
    if previous is None:
        return new.to_bytes()
    return rebase_origin(new, previous).to_bytes()


def held(body: bytes | None) -> bytes | None:
    """`body` (already a new offer) with every open stream on hold, version unchanged."""
    session = parse_or_none(body)
    if session is None:
        return body
    for media in session.media:
        if media.port != 0:
            media.set_direction(held_direction(session.direction_of(media)))
    return session.to_bytes()


def sendrecv(body: bytes | None) -> bytes | None:
    """`body` with every open stream both ways: a held party's answer, made fit to offer on."""
    session = parse_or_none(body)
    if session is None:
        return body
    session.set_direction(None)
    for media in session.media:
        if media.port != 0:
            media.set_direction(Direction.SENDRECV)
    return session.to_bytes()
