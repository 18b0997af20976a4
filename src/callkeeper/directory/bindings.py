"""A registration binding (RFC 3261 §10, RFC 5626 §6) as one storable record.

`Binding` is a `msgspec.Struct` rather than a dataclass because the registrar's bindings must
survive `kill -9`: the io layer writes each one to the store as bytes (`encode_binding`) and
`Registrar.restore` rebuilds the table from them (`decode_binding`). msgspec does no I/O, so it
is allowed in this pure package, and its msgpack codec is both compact and validating — a row
damaged on disk fails to decode instead of restoring a half-binding.

Identity. Within one user, a binding is identified by its `key`:
- `instance:<+sip.instance>#<reg-id>` when RFC 5626 outbound processing applied — one binding
  per UA instance and flow, whatever Contact URI the phone uses after a reboot;
- `instance:<+sip.instance>` for a contact with an instance id but no (honoured) reg-id — the
  RFC 5627 rule, which also makes a rebooted phone replace its own stale binding instead of
  piling up a second one with a new ephemeral port;
- `uri:<normalized Contact URI>` otherwise (RFC 3261 §10.3 step 7 compares Contact URIs).

Where requests go. A phone behind NAT registers a Contact with its private address, which no
one outside can reach; the address the REGISTER came *from* (the NAT's public mapping) can be.
So every binding remembers the flow it was registered over (transport, source, our socket,
connection id) — what Kamailio's `fix_nated_register()` stores as the `received` attribute —
and `next_hop()` prefers it: for UDP always (SIP UAs send and receive on one port, RFC 4961
symmetric signalling, so the source address is where they listen, NAT or not), for TCP/TLS/WS
while the connection lives. Outbound (RFC 5626) makes that preference a rule: requests *must*
use the registered flow. The Request-URI stays the Contact URI either way.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from urllib.parse import unquote

import msgspec

from callkeeper.sip.transport import RELIABLE_TRANSPORTS, Flow
from callkeeper.sip.uri import URI, parse_uri

_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "ws": 80, "tls": 5061, "wss": 443}
# URI parameters that take part in URI comparison even when only one side has them (§19.1.4).
_SIGNIFICANT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


class Binding(msgspec.Struct, frozen=True, omit_defaults=True):
    """One contact of one user, with the flow it registered over and its expiry.

    Times (`expires_at`, `registered_at`, `updated_at`) are on the clock of the `now` values the
    registrar was given. `contact` is the Contact header value as registered without `expires`
    (so it keeps `+sip.instance`, `reg-id`, `q` for the 200 OK); `uri` is its URI — the
    Request-URI of requests to this binding.
    """

    user: str
    key: str
    contact: str
    uri: str
    expires_at: float
    registered_at: float  # when this binding was created (or replaced after a reboot)
    updated_at: float  # the last REGISTER that refreshed it
    call_id: str
    cseq: int
    transport: str  # of the flow it registered over: udp, tcp, tls, ws, wss
    remote_host: str  # the source address of that REGISTER (the NAT's public side)
    remote_port: int
    local_host: str = "0.0.0.0"
    local_port: int = 0
    connection: int | None = None  # stream connection id; None for udp and after a restart
    instance: str | None = None  # +sip.instance, e.g. '"<urn:uuid:...>"'
    reg_id: int | None = None  # only set when outbound processing applied
    outbound: bool = False  # RFC 5626: requests must use the registered flow
    nat: bool = False  # the Contact address differs from the source address
    q: float = 1.0
    user_agent: str = ""
    path: tuple[str, ...] = ()  # RFC 3327 Path values: route requests through them

    # --- views ------------------------------------------------------------------------------
    @property
    def flow(self) -> Flow:
        """The flow this binding registered over."""
        return Flow(
            self.transport,
            (self.remote_host, self.remote_port),
            (self.local_host, self.local_port),
            self.connection,
        )

    @property
    def request_uri(self) -> URI:
        return parse_uri(self.uri)

    @property
    def endpoint_id(self) -> str:
        """A short, stable, URL-safe id for the API and the liveness monitor."""
        return endpoint_id(self.user, self.key)

    def remaining(self, now: float) -> int:
        """Whole seconds left, rounded up (what the 200 OK's `expires` says); 0 when expired."""
        return max(0, math.ceil(self.expires_at - now - 1e-9))

    def is_live(self, now: float) -> bool:
        return self.expires_at > now

    def next_hop(self) -> Flow:
        """The flow requests to this phone should be sent over (see the module docstring).

        UDP: the registered source address. TCP/TLS/WS with a connection id: that connection.
        A stream binding without one (the connection closed, or callkeeper restarted) cannot
        reuse the old connection, and its source port was ephemeral, so the io layer is pointed
        at the Contact's own address to open a new connection — which works for a reachable
        phone and fails fast for one behind NAT (the liveness monitor has it DOWN by then; an
        outbound phone re-registers over a new flow as soon as its keep-alive notices).
        """
        if self.transport not in RELIABLE_TRANSPORTS or self.connection is not None:
            return self.flow
        uri = self.request_uri
        port = uri.port or _DEFAULT_PORTS.get(self.transport, 5060)
        host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
        return Flow(self.transport, (host, port), (self.local_host, self.local_port), None)


def endpoint_id(user: str, key: str) -> str:
    """16 hex digits derived from (user, key): stable across restarts, safe in a URL path."""
    digest = hashlib.blake2s(f"{user}\x00{key}".encode(), digest_size=8)
    return digest.hexdigest()


# --- keys --------------------------------------------------------------------------------------


def instance_key(instance: str, reg_id: int | None) -> str:
    return f"instance:{instance}" if reg_id is None else f"instance:{instance}#{reg_id}"


def uri_key(uri: URI) -> str:
    """A string equal for Contact URIs that RFC 3261 §19.1.4 calls equal (the common cases)."""
    user = unquote(uri.user) if uri.user is not None else ""
    port = "" if uri.port is None else str(uri.port)
    params = "".join(
        f";{name}={(uri.param(name) or '').lower()}"
        for name in _SIGNIFICANT_PARAMS
        if uri.has_param(name)
    )
    return f"uri:{uri.scheme}:{user}@{uri.host.lower()}:{port}{params}"


def behind_nat(contact: URI, flow: Flow) -> bool:
    """True when the Contact does not name the address the REGISTER came from.

    The nathelper test (Kamailio `nat_uac_test` flags 1 and 2): a Contact IP that is not the
    source IP, or over UDP a Contact port that is not the source port. A host name cannot be
    compared and counts as NAT only over UDP, where we will answer to the source anyway.
    Plain string comparison decides the common cases; only IPv6 text needs normalizing.
    """
    host = contact.host[1:-1] if contact.host.startswith("[") else contact.host
    source = flow.remote[0]
    source = source[1:-1] if source.startswith("[") else source
    if host != source:
        if ":" in host:
            return _ipv6(host) != _ipv6(source) or _udp_port_differs(contact, flow)
        if _IPV4_RE.fullmatch(host) is None:
            return flow.transport == "udp"  # a host name
        return True
    return _udp_port_differs(contact, flow)


def _udp_port_differs(contact: URI, flow: Flow) -> bool:
    return flow.transport == "udp" and (contact.port or 5060) != flow.remote[1]


def _ipv6(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


# --- storage codec ---------------------------------------------------------------------------

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Binding)


def encode_binding(binding: Binding) -> bytes:
    """The bytes the store keeps for `binding` (msgpack; default-valued fields left out)."""
    return _ENCODER.encode(binding)


def decode_binding(data: bytes) -> Binding:
    """The binding stored as `data`; raises `msgspec.DecodeError` for damaged or foreign data."""
    return _DECODER.decode(data)
