"""The addresses the configured host names resolved to (RFC 3263), and the flows they give.

One job: the table. Trunks, static contacts and `voicemail_uri` may name a host; io/resolver.py
looks the names up ahead of time (`needed_lookups` says which) and hands each answer in
(`CallManager.set_resolved`), so routing a call only reads this table and never waits on DNS.
A URI whose name has no address yet has no flow: the caller decides what that means (503 for a
trunk, a static contact skipped).

Every address of an answer is kept, in RFC 3263 order (SRV priority and weight, then each
target's addresses): a call goes to the first and fails over to the next ones (forking.py). An
address that answered `503` with `Retry-After` rests until then (`rest`): it is tried last.
"""

from __future__ import annotations

from collections.abc import Collection

from callkeeper.calls.locals import LocalAddresses
from callkeeper.directory import Directory
from callkeeper.sip.locate import DEFAULT_PORTS, Lookup, lookup_for, uri_transport
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI, parse_uri

Addresses = tuple[tuple[str, int], ...]
# A Retry-After longer than this is a misconfigured server, not a reason to skip it for a day.
MAX_REST = 3600.0


def needed_lookups(directory: Directory, voicemail_uri: str | None) -> set[Lookup]:
    """The DNS look-ups the configured URIs need: static contacts, trunks, voicemail_uri.
    (A `mobile` is reached through the trunk that serves its host or its number.)"""
    uris = [static.uri for static in directory.all_static_contacts()]
    uris += [trunk.uri for trunk in directory.trunks.trunks if trunk.uri.is_sip]
    if voicemail_uri is not None:
        uris.append(parse_uri(voicemail_uri))
    return {lookup for lookup in map(lookup_for, uris) if lookup is not None}


class ResolvedTargets:
    """Host names of configured URIs → their addresses, best first."""

    def __init__(self, local: LocalAddresses) -> None:
        self._local = local
        self._addresses: dict[Lookup, Addresses] = {}
        self._resting: dict[tuple[str, int], float] = {}  # address → until when it is tried last

    def get(self, lookup: Lookup) -> Addresses:
        return self._addresses.get(lookup, ())

    def set(self, lookup: Lookup, addresses: Addresses) -> bool:
        """Record `lookup`'s answer (none: forget it); True when the first address — the one
        calls use — changed."""
        previous = self._addresses.get(lookup, ())
        if addresses:
            self._addresses[lookup] = addresses
        else:
            self._addresses.pop(lookup, None)
        return previous[:1] != addresses[:1]

    def keep_only(self, wanted: Collection[Lookup]) -> None:
        """Forget the names the configuration no longer uses (after a reload)."""
        self._addresses = {
            lookup: found for lookup, found in self._addresses.items() if lookup in wanted
        }

    def flow_for(self, uri: URI) -> Flow | None:
        """The flow to a URI's host and port: an IP literal as it is, a host name at the first
        address io/resolver.py found for it (RFC 3263), None while it has none."""
        flows = self.flows_for(uri)
        return flows[0] if flows else None

    def flows_for(self, uri: URI, now: float | None = None) -> tuple[Flow, ...]:
        """Every flow to a URI, in the order to try them (RFC 3263 §4.3): one for an IP literal,
        a host name's addresses best first, those resting at `now` (if given) moved last."""
        transport = uri_transport(uri)
        local = self._local.local_for(transport)
        lookup = lookup_for(uri)
        if lookup is None:
            host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
            return (Flow(transport, (host, uri.port or DEFAULT_PORTS[transport]), local),)
        addresses = self._addresses.get(lookup, ())
        if now is not None and self._resting:
            resting = self._resting
            addresses = tuple(sorted(addresses, key=lambda a: resting.get(a, now) > now))
        return tuple(Flow(transport, address, local) for address in addresses)

    def rest(self, address: tuple[str, int], seconds: float, now: float) -> None:
        """`address` answered 503 with Retry-After: `seconds` (RFC 3261 §21.5.4): try it last
        until then. Expired entries are dropped here, so the table holds only resting ones."""
        self._resting = {a: until for a, until in self._resting.items() if until > now}
        if seconds > 0:
            self._resting[address] = now + min(seconds, MAX_REST)
