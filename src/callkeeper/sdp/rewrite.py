"""Point a description's media at the relay (`[media] mode = "relay"` or rtpengine).

When callkeeper anchors media, each party must send RTP and RTCP to the relay instead of to
the other party: every `c=` becomes the relay's address, every open stream's port the port
the relay allocated for it, and an `a=rtcp` (RFC 3605) that names another port or host is
rewritten or removed — left alone, it would send RTCP around the relay. ICE lines go too:
candidates name the other party's addresses, and with the relay as the only media address
there is nothing to negotiate (an ICE agent then falls back to the `c=`/`m=` address).
"""

from __future__ import annotations

from collections.abc import Sequence

from callkeeper.sdp.addresses import address_problem, address_type
from callkeeper.sdp.attributes import MAX_PORT, RtcpAddress
from callkeeper.sdp.model import Attribute, Connection, SessionDescription

_ICE_NAMES = frozenset({"candidate", "end-of-candidates", "remote-candidates"})


def is_ice_attribute(name: str) -> bool:
    """`a=candidate`, `a=end-of-candidates`, `a=remote-candidates` and every `a=ice-*`."""
    return name in _ICE_NAMES or name.startswith("ice-")


def strip_ice(session: SessionDescription) -> SessionDescription:
    """A copy without ICE attributes, at session and media level (RFC 8839)."""
    stripped = session.copy()
    stripped.attributes = [a for a in stripped.attributes if not is_ice_attribute(a.name)]
    for media in stripped.media:
        media.attributes = [a for a in media.attributes if not is_ice_attribute(a.name)]
    return stripped


def anchor_media(
    session: SessionDescription,
    address: str,
    ports: Sequence[int],
    rtcp_ports: Sequence[int | None] | None = None,
) -> SessionDescription:
    """A copy whose media all goes to `address`: stream i to `ports[i]`.

    `rtcp_ports[i]`, when given, is announced as `a=rtcp:<port> IN <type> <address>`; when
    None, RTCP goes to the RTP port + 1 (the RFC 3605 default) and any `a=rtcp` is removed.
    Rejected streams (port 0) stay rejected. `ports` has one entry per m= line; a wrong
    count or address is a programming error (ValueError), not a peer's.
    """
    if len(ports) != len(session.media):
        raise ValueError(f"{len(ports)} ports for {len(session.media)} m= lines")
    if rtcp_ports is not None and len(rtcp_ports) != len(session.media):
        raise ValueError(f"{len(rtcp_ports)} RTCP ports for {len(session.media)} m= lines")
    addrtype = address_type(address)
    if address_problem("IN", addrtype, address) is not None or "/" in address:
        raise ValueError(f"not a unicast address: {address!r}")
    for port in (*ports, *(rtcp_ports or ())):
        if port is not None and not 0 < port <= MAX_PORT:
            raise ValueError(f"not a port: {port}")

    anchored = strip_ice(session)
    connection = Connection("IN", addrtype, address)
    if anchored.connection is not None or any(not m.connections for m in anchored.media):
        anchored.connection = connection
    for index, media in enumerate(anchored.media):
        if media.connections:
            media.connections = [connection]
        if media.port == 0:
            continue
        media.port = ports[index]
        media.port_count = None  # the relay allocates one port (pair) per stream
        rtcp_port = None if rtcp_ports is None else rtcp_ports[index]
        rtcp = None
        if rtcp_port is not None:
            rtcp = Attribute("rtcp", str(RtcpAddress(rtcp_port, "IN", addrtype, address)))
        media.attributes = _replace_rtcp(media.attributes, rtcp)
    return anchored


def _replace_rtcp(attributes: list[Attribute], rtcp: Attribute | None) -> list[Attribute]:
    """`rtcp` in place of the first `a=rtcp` (appended if there was none); None removes them."""
    result: list[Attribute] = []
    for attribute in attributes:
        if attribute.name != "rtcp":
            result.append(attribute)
        elif rtcp is not None:
            result.append(rtcp)
            rtcp = None
    if rtcp is not None:
        result.append(rtcp)
    return result
