"""Where a message came from or goes to, as the pure core sees it (no sockets here)."""

from __future__ import annotations

from dataclasses import dataclass

RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss"})


@dataclass(frozen=True, slots=True)
class Flow:
    """A transport flow (RFC 5626 §3): transport, our socket address and the peer's.

    `connection` identifies the stream connection for tcp/tls/ws/wss (None for udp), so a reply or
    a request to a phone behind NAT can go back over the very connection it registered on.
    """

    transport: str  # "udp", "tcp", "tls", "ws", "wss" (lower case)
    remote: tuple[str, int]
    local: tuple[str, int] = ("0.0.0.0", 0)
    connection: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS

    @property
    def via_transport(self) -> str:
        """The transport token for a Via header (RFC 3261 §20.42, RFC 7118)."""
        return self.transport.upper()

    def __str__(self) -> str:
        return f"{self.transport}:{self.remote[0]}:{self.remote[1]}"


@dataclass(frozen=True, slots=True)
class Transmit:
    """Command: put these bytes on the wire over `flow` (io opens a connection if needed)."""

    flow: Flow
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseFlow:
    """Command: close the stream connection behind `flow` (after a framing error, say)."""

    flow: Flow
