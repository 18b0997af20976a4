"""SDP for callkeeper, sans-IO: model, parser, offer/answer rules, hold and relay rewriting.

Written here rather than taken from a library: `sdp-transform` (a port of the JavaScript
one) yields untyped dicts and sets lines it cannot read aside instead of refusing the body;
aiortc's parser lives inside its WebRTC stack and keeps only what WebRTC needs. A B2BUA must
pass on every line a phone sent, answer a bad body with 488, and parse at INVITE rate.

    session = parse_sdp(request.body)          # SdpError(reason) -> 488 Not Acceptable Here
    offer = make_hold_offer(session)           # every open stream sendonly/inactive, o= + 1
    body = offer.to_bytes()
"""

from callkeeper.sdp.attributes import STATIC_PAYLOAD_TYPES, RtcpAddress, RtpMap
from callkeeper.sdp.direction import Direction
from callkeeper.sdp.errors import SdpError
from callkeeper.sdp.hold import (
    held_direction,
    is_held,
    make_hold_offer,
    make_unhold_offer,
    rebase_origin,
)
from callkeeper.sdp.model import (
    Attribute,
    Bandwidth,
    Connection,
    Line,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)
from callkeeper.sdp.offer_answer import (
    answer_direction,
    check_answer,
    direction_allowed,
    next_version,
)
from callkeeper.sdp.parser import MAX_SDP_BYTES, parse_sdp, validate_sdp
from callkeeper.sdp.rewrite import anchor_media, is_ice_attribute, strip_ice

__all__ = [
    "MAX_SDP_BYTES",
    "STATIC_PAYLOAD_TYPES",
    "Attribute",
    "Bandwidth",
    "Connection",
    "Direction",
    "Line",
    "MediaDescription",
    "Origin",
    "RtcpAddress",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "Timing",
    "anchor_media",
    "answer_direction",
    "check_answer",
    "direction_allowed",
    "held_direction",
    "is_held",
    "is_ice_attribute",
    "make_hold_offer",
    "make_unhold_offer",
    "next_version",
    "parse_sdp",
    "rebase_origin",
    "strip_ice",
    "validate_sdp",
]
