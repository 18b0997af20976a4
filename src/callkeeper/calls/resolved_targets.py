"""The addresses the configured host names resolved to (RFC 3263), and the flows they give.

One job: the table. Trunks, static contacts and `voicemail_uri` may name a host; io/resolver.py
looks the names up ahead of time (`needed_lookups` says which) and hands each answer in
(`CallManager.set_resolved`), so routing a call only reads this table and never waits on DNS.
A URI whose name has no address yet has no flow: the caller decides what that means (503 for a
trunk, a static contact skipped).
"""

from __future__ import annotations

from collections.abc import Collection

from callkeeper.calls.locals import LocalAddresses
from callkeeper.directory import Directory
from callkeeper.sip.locate import DEFAULT_PORTS, Lookup, lookup_for, uri_transport
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI, parse_uri

Addresses = tuple[tuple[str, int], ...]


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
        transport = uri_transport(uri)
        lookup = lookup_for(uri)
        if lookup is None:
            host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
            address = (host, uri.port or DEFAULT_PORTS[transport])
        else:
            addresses = self._addresses.get(lookup)
            if not addresses:
                return None
            address = addresses[0]
        return Flow(transport, address, self._local.local_for(transport))
