"""RFC 3263 §4 server location, the pure part: which DNS look-up a configured SIP URI needs,
how SRV answers are ordered (RFC 2782), and what host names the configuration may use.

The look-ups themselves are I/O and happen ahead of time in io/resolver.py; the core only reads
their results from a table (`CallManager.set_resolved`), so routing a call never waits on DNS.

What is resolved, for a URI whose host is a name (an IP literal needs nothing):
- with an explicit port: the name's A records (AAAA when it has none), on that port;
- without one: SRV `_sip._udp.` / `_sip._tcp.` / `_sips._tcp.` + name, chosen by the URI's
  transport (`;transport=`, `sips:` → tls, udp when it says nothing), targets in RFC 2782 order
  and each target's A/AAAA; with no SRV records, the name's A/AAAA on 5060 (5061 for tls).
NAPTR (§4.1) is skipped: the transport comes from the URI, udp by default, which is what §4.1
ends up with for a URI without NAPTR records and what every configured trunk here states.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from callkeeper.sip.uri import URI

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80}
_SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
# RFC 1035 §2.3.4 limits (the URI grammar has already checked the characters).
_MAX_NAME = 253
_MAX_LABEL = 63


@dataclass(frozen=True, slots=True)
class Lookup:
    """The DNS question behind a URI: `host` (a name, lower case, no trailing dot) reached over
    `transport`; `port` None means "SRV first", a number means A/AAAA on that port."""

    host: str
    transport: str
    port: int | None

    @property
    def srv_name(self) -> str | None:
        """The SRV owner name to ask, or None when the port is given (or for ws)."""
        prefix = _SRV_PREFIX.get(self.transport)
        return None if self.port is not None or prefix is None else prefix + self.host

    @property
    def default_port(self) -> int:
        """The port of the A/AAAA answers when no SRV record says otherwise."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.transport]

    def __str__(self) -> str:
        return self.srv_name or f"{self.host}:{self.default_port}"


def uri_transport(uri: URI) -> str:
    """The transport a request to `uri` uses: its own, udp when we do not speak it."""
    transport = uri.transport
    return transport if transport in DEFAULT_PORTS else "udp"


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 address or a bracketed IPv6 reference, for a host the URI grammar has
    accepted: there a name's last label starts with a letter and an IPv4 address's with a digit."""
    if host.startswith("["):
        return True
    last_label = host.rstrip(".").rpartition(".")[2]
    return last_label[:1].isdigit()


def lookup_for(uri: URI) -> Lookup | None:
    """What to resolve to send to `uri`; None when its host is an IP literal."""
    if is_ip_literal(uri.host):
        return None
    return Lookup(uri.host.lower().rstrip("."), uri_transport(uri), uri.port)


def host_name_problem(host: str) -> str | None:
    """Why `host` (already valid URI grammar) cannot be looked up in DNS, or None."""
    if is_ip_literal(host):
        return None
    name = host.rstrip(".")
    if len(name) > _MAX_NAME:
        return f"host name longer than {_MAX_NAME} characters"
    if any(len(label) > _MAX_LABEL for label in name.split(".")):
        return f"a label of {name[:64]!r} is longer than {_MAX_LABEL} characters"
    return None


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # a host name, without the trailing dot


def order_srv(records: Iterable[SrvRecord], pick: Callable[[int], int]) -> list[SrvRecord]:
    """RFC 2782 order: lowest priority first; within a priority, a weighted random draw.

    `pick(total)` returns a number in 0..total (inclusive), e.g. `random.randint(0, total)`.
    Records with target "." ("decidedly not available") are dropped.
    """
    by_priority: dict[int, list[SrvRecord]] = {}
    for record in records:
        if record.target not in (".", ""):
            by_priority.setdefault(record.priority, []).append(record)
    ordered: list[SrvRecord] = []
    for priority in sorted(by_priority):
        ordered.extend(_weighted(by_priority[priority], pick))
    return ordered


def _weighted(records: list[SrvRecord], pick: Callable[[int], int]) -> list[SrvRecord]:
    """RFC 2782's selection: weight-0 records first in the list (so they are picked only when
    nothing weighs more), then repeatedly the first record whose running sum of weights reaches a
    random number in 0..sum."""
    remaining = sorted(records, key=lambda record: record.weight != 0)
    chosen: list[SrvRecord] = []
    while remaining:
        total = sum(record.weight for record in remaining)
        number = min(pick(total), total)
        running = 0
        for index, record in enumerate(remaining):
            running += record.weight
            if running >= number:
                chosen.append(remaining.pop(index))
                break
    return chosen
