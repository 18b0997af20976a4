"""Which media anchor the configuration asks for, and the address phones send RTP to.

One job: `[media] mode` made concrete. `off` has no anchor (SDP passes through unchanged),
`relay` the built-in relay's plan (media_anchor.py), `rtpengine` rtpengine's (rtpengine_anchor.py)
with the built-in relay kept for recording voicemail. io/server.py starts the matching relay on
`media_address`.
"""

from __future__ import annotations

from callkeeper.calls.anchors import Anchor
from callkeeper.calls.media_anchor import MediaAnchor, PortPool
from callkeeper.calls.rtpengine_anchor import Recorder, RtpengineAnchor
from callkeeper.config import Config


def anchor_for(config: Config) -> Anchor | None:
    if config.media.mode == "relay":
        return MediaAnchor(media_address(config), PortPool.from_range(config.media.rtp_ports))
    if config.media.mode == "rtpengine":
        # The built-in relay still records voicemail, on ports from media.rtp_ports.
        recorder = Recorder(media_address(config), PortPool.from_range(config.media.rtp_ports))
        return RtpengineAnchor(recorder)
    return None


def media_address(config: Config) -> str:
    """The address phones send RTP to: `media.address`, else the first SIP listen address that
    is not a wildcard, else loopback."""
    if config.media.address is not None:
        return config.media.address
    for listen in config.sip.listen:
        host = listen.host.strip("[]")
        if host not in ("0.0.0.0", "::", ""):
            return host
    return "127.0.0.1"
