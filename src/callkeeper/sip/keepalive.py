"""Tell keep-alives from SIP on the SIP port, by their first bytes, before parsing.

Three kinds of traffic share the port (RFC 5626 §3.5.1, §4.4; demultiplexed by first byte in the
manner of RFC 7983): CRLF keep-alives, STUN Binding keep-alives and SIP messages. Each of them
is a sign of life for the endpoint's failure detector, so the transport layer classifies a
datagram (or the bytes at the start of a stream read) first and only parses what is SIP.

- On a stream, a double CRLF is a *ping*; the answer is a single CRLF *pong* (RFC 5626 §4.4.1).
  `parser.StreamParser` frames pings and pongs that arrive mixed with messages.
- On UDP, RFC 5626 uses STUN, not CRLF (§4.4.2); phones nevertheless send CRLF datagrams to keep
  their NAT binding open. Such a datagram is counted as a sign of life and answered with nothing:
  a reply is not expected by anyone and would only double the keep-alive traffic.
- A datagram that is none of these and cannot be the start of a SIP message (SIP starts with a
  method token, `SIP/`, or CRLFs before the start line, RFC 3261 §7.5) is `UNKNOWN`: drop it
  without spending a parse on it (stray RTP, DTLS, scanners).
"""

from __future__ import annotations

from enum import Enum

from callkeeper.sip.stun import is_stun

PING = b"\r\n\r\n"
PONG = b"\r\n"

# First bytes a SIP message can start with: a token character (RFC 3261 §25.1) — every method
# and "SIP/2.0" — or CR/LF before the start line.
_SIP_FIRST = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~\r\n"
)


class Kind(Enum):
    PING = "ping"  # CRLFCRLF (or more CRLF pairs): answer PONG on a stream, nothing on UDP
    PONG = "pong"  # a lone CRLF: the answer to our ping, or a UDP keep-alive
    STUN = "stun"  # a STUN message: hand to `stun.handle_datagram`
    SIP = "sip"  # anything else that may be a SIP message: parse it
    UNKNOWN = "unknown"  # cannot be SIP, STUN or a keep-alive: drop


def classify(data: bytes) -> Kind:
    """Classify one datagram, or the bytes at the start of a stream read.

    Only CR/LF pairs count as a keep-alive: CRLFs followed by anything else are the optional
    CRLFs before a SIP start line, so that is `SIP`.
    """
    if not data:
        return Kind.UNKNOWN
    if is_stun(data):
        return Kind.STUN
    if data == PONG:
        return Kind.PONG
    if len(data) % 2 == 0 and data == PONG * (len(data) // 2):
        return Kind.PING
    if data[0] in _SIP_FIRST:
        return Kind.SIP
    return Kind.UNKNOWN


def keepalive_reply(kind: Kind, reliable: bool) -> bytes | None:
    """What to send back for a keep-alive kind: a pong for a ping on a stream, else nothing."""
    if kind is Kind.PING and reliable:
        return PONG
    return None
