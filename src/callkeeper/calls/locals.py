"""Our own addresses, as they appear in the Via and Contact of requests we send.

A request leaves over a flow; its Via sent-by and our Contact must name the socket it leaves
from (the listen address of that transport), so that responses and in-dialog requests come back
to us. A wildcard listen address (0.0.0.0) is not reachable, so then `sip.domain` stands in.
"""

from __future__ import annotations

from callkeeper.sip.address import Address
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI
from callkeeper.sip.via import Via

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class LocalAddresses:
    def __init__(self, domain: str) -> None:
        self.domain = domain
        self._by_transport: dict[str, list[tuple[str, int]]] = {}
        # Via and Contact by (transport, local end[, user]): every request and 2xx we send
        # carries them, and they change only with the listen addresses. A flow's local end is
        # one of those (or a wildcard), so the tables stay small.
        self._vias: dict[tuple[str, tuple[str, int]], Via] = {}
        self._contacts: dict[tuple[str, tuple[str, int], str], Address] = {}

    def add(self, transport: str, address: tuple[str, int]) -> None:
        self._by_transport.setdefault(transport, []).append(address)
        self._vias.clear()
        self._contacts.clear()

    def transports(self) -> list[str]:
        return list(self._by_transport)

    def listen_address(self, transport: str) -> tuple[str, int] | None:
        addresses = self._by_transport.get(transport)
        return addresses[0] if addresses else None

    def sent_by(self, flow: Flow) -> tuple[str, int]:
        """The host and port we advertise for requests over `flow`."""
        host, port = flow.local
        if host in _WILDCARDS or port == 0:
            listen = self.listen_address(flow.transport)
            if listen is not None:
                host, port = listen
        if host in _WILDCARDS:
            host = self.domain
        return host, port

    def local_for(self, transport: str) -> tuple[str, int]:
        """The `local` end of a new flow of this transport (our listen address)."""
        return self.listen_address(transport) or ("0.0.0.0", 0)

    def complete(self, flow: Flow) -> Flow:
        """`flow` with our listen address as its local end when it has none (a stored binding)."""
        if flow.local[1] != 0:
            return flow
        return Flow(flow.transport, flow.remote, self.local_for(flow.transport), flow.connection)

    def via(self, flow: Flow) -> Via:
        key = (flow.transport, flow.local)
        via = self._vias.get(key)
        if via is None:
            host, port = self.sent_by(flow)
            host = f"[{host}]" if ":" in host else host
            via = self._vias[key] = Via(flow.via_transport, host, port, (("rport", None),))
        return via

    def contact(self, flow: Flow, user: str = "callkeeper") -> Address:
        key = (flow.transport, flow.local, user)
        contact = self._contacts.get(key)
        if contact is None:
            host, port = self.sent_by(flow)
            host = f"[{host}]" if ":" in host else host
            params: tuple[tuple[str, str | None], ...] = ()
            if flow.transport != "udp":
                params = (("transport", flow.transport),)
            uri = URI("sip", user=user, host=host, port=port, params=params)
            contact = self._contacts[key] = Address(uri)
        return contact

    def is_ours(self, host: str, port: int | None) -> bool:
        """True when `host:port` names one of our listen addresses (or our domain)."""
        if host.lower() == self.domain.lower() and port is None:
            return True
        for addresses in self._by_transport.values():
            for listen_host, listen_port in addresses:
                if port in (None, listen_port) and host in (listen_host, self.domain):
                    return True
        return False
