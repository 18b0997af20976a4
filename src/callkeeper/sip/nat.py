"""Where a request really came from, and where its responses must go (RFC 3261 §18.2, RFC 3581).

Phones behind NAT put their private address in Via. The server side of the fix is two rules:
on receipt, stamp the top Via with `received=` (the source IP) and fill an empty `rport` with the
source port; when answering, send the response to that stamped address — over the same
connection when the transport is reliable. Both are pure functions over a `Via` and a `Flow`;
the io layer does the sending.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from callkeeper.sip.message import Request
from callkeeper.sip.transport import Flow
from callkeeper.sip.via import Via

DEFAULT_PORT = 5060
DEFAULT_TLS_PORT = 5061


@functools.lru_cache(maxsize=4096)
def _normalise_ip(host: str) -> str | None:
    """The canonical text of an IP literal (brackets removed), or None for a host name.

    Cached: it runs three times per request on the hot path, for a small set of peer addresses,
    and `ipaddress` parsing is slow; the bound keeps a scan of many sources from growing it.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def default_port(transport: str) -> int:
    """The port implied when a sent-by has none (RFC 3261 §18.2.2, §19.1.2)."""
    return DEFAULT_TLS_PORT if transport.upper() in ("TLS", "WSS") else DEFAULT_PORT


def stamp_via(via: Via, source: tuple[str, int]) -> Via:
    """Add `received` and fill `rport` on a received request's top Via.

    `received` is added when the sent-by host is a name or an IP other than the source IP
    (§18.2.1), and always when the Via carries `rport` (RFC 3581 §4). An empty `rport` gets the
    source port; one that already has a value is left alone. The source IP is written without
    brackets, as the `via-received` grammar (an IPv6address, not an IPv6reference) requires.
    """
    source_ip = _normalise_ip(source[0]) or source[0]
    has_rport = via.has_param("rport")
    changes: dict[str, str | None] = {}
    if has_rport or _normalise_ip(via.host) != source_ip:
        changes["received"] = source_ip
    if has_rport and via.param("rport") is None:
        changes["rport"] = str(source[1])
    return via.with_params(**changes) if changes else via


def stamp_request(request: Request, flow: Flow) -> bool:
    """Apply `stamp_via` to the request's top Via in place; True when it changed."""
    via = request.top_via
    stamped = stamp_via(via, flow.remote)
    if stamped is via:
        return False
    request.set_top_via(stamped)
    return True


@dataclass(frozen=True, slots=True)
class ResponseTarget:
    """Where to send a response: a connection to reuse, else (host, port) over `transport`.

    `connection` is the flow's connection id for reliable transports; when that connection is
    gone the response goes to (host, port), opening a new connection (§18.2.2). `host` may be a
    name that needs RFC 3263 §5 resolution when it came from a sent-by. `ttl` is set for a
    multicast `maddr`.
    """

    transport: str  # upper case, as in Via
    host: str
    port: int
    connection: int | None = None
    ttl: int | None = None


def response_target(via: Via, flow: Flow | None = None) -> ResponseTarget:
    """Decide where responses to a request go, from its (stamped) top Via (§18.2.2, RFC 3581 §4).

    1. reliable transport: the connection the request came on (fallback: `received` or the
       sent-by host, at the sent-by port);
    2. `maddr`: that address, at the sent-by port, with `ttl`;
    3. `received`: that IP, at `rport` when it has a value, else at the sent-by port;
    4. otherwise the sent-by host and port.
    Missing ports default to 5060 (5061 for TLS).
    """
    transport = via.transport.upper()
    sent_by_port = via.port if via.port is not None else default_port(transport)
    received = via.param("received")
    if via.reliable:
        connection = flow.connection if flow is not None and flow.reliable else None
        return ResponseTarget(transport, _host(received or via.host), sent_by_port, connection)
    maddr = via.param("maddr")
    if maddr:
        return ResponseTarget(transport, _host(maddr), sent_by_port, ttl=_multicast_ttl(via, maddr))
    if received:
        port = _port(via.param("rport")) or sent_by_port
        return ResponseTarget(transport, _host(received), port)
    return ResponseTarget(transport, _host(via.host), sent_by_port)


def _host(text: str) -> str:
    """IP literals without brackets and in canonical form (what a socket wants); names as is."""
    return _normalise_ip(text) or text


def _port(text: str | None) -> int | None:
    if text is None or not text.isdigit() or not 0 < int(text) <= 65535:
        return None
    return int(text)


def _multicast_ttl(via: Via, maddr: str) -> int | None:
    """The TTL for a multicast maddr: the Via's `ttl`, else 1 (§18.2.2); None for unicast."""
    ip = _normalise_ip(maddr)
    if ip is None or not ipaddress.ip_address(ip).is_multicast:
        return None
    ttl = via.param("ttl")
    return int(ttl) if ttl and ttl.isdigit() else 1
