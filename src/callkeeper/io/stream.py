"""TCP and TLS transports: listeners, outgoing connections, reuse, and idle/slow-peer timeouts.

Each connection frames its bytes with the pure `StreamParser` and hands complete items to the
driver. A connection is closed when nothing arrives for `idle_timeout`, or when a message that
has started does not complete within `message_timeout` (a peer trickling one byte a second, or a
Content-Length larger than what it sends, cannot hold a connection forever).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from dataclasses import dataclass
from typing import cast

import structlog

from callkeeper.sip.parser import StreamItem, StreamParser
from callkeeper.sip.transport import Flow

log = structlog.get_logger(__name__)

_connection_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class StreamTimeouts:
    idle: float = 120.0
    message: float = 32.0


class StreamHandler:
    """What a connection reports to (the driver implements these)."""

    def on_stream_item(self, item: StreamItem, flow: Flow) -> None:
        raise NotImplementedError

    def on_connection_lost(self, flow: Flow, error: Exception | None) -> None:
        raise NotImplementedError


class StreamConnection(asyncio.Protocol):
    def __init__(self, manager: StreamManager, transport_name: str) -> None:
        self._manager = manager
        self._transport_name = transport_name
        self._transport: asyncio.Transport | None = None
        self._parser = StreamParser()
        self.id = next(_connection_ids)
        self.flow: Flow | None = None
        self._loop = asyncio.get_running_loop()
        self._last_data = self._loop.time()
        self._message_started: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = float("inf")
        self._pending_writes: list[bytes] = []

    # --- asyncio callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        transport = self._transport
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.flow = Flow(
            self._transport_name, (peer[0], peer[1]), (sock[0], sock[1]), connection=self.id
        )
        self._manager._register(self)
        for data in self._pending_writes:
            transport.write(data)
        self._pending_writes.clear()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        assert self.flow is not None
        now = self._loop.time()
        self._last_data = now
        parser = self._parser
        parser.feed(data)
        while (item := parser.next_item()) is not None:
            self._manager.handler.on_stream_item(item, self.flow)
        if parser.pending:
            if self._message_started is None:
                self._message_started = now
                if now + self._manager.timeouts.message < self._timer_deadline:
                    self._arm_timer()
        else:
            self._message_started = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._manager._unregister(self)
        if self.flow is not None:
            self._manager.handler.on_connection_lost(self.flow, exc)

    # --- used by the manager ------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._transport is None:
            self._pending_writes.append(data)
        elif not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _arm_timer(self) -> None:
        timeouts = self._manager.timeouts
        deadline = self._last_data + timeouts.idle
        if self._message_started is not None:
            deadline = min(deadline, self._message_started + timeouts.message)
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self._loop.call_at(deadline, self._check_timeouts)

    def _check_timeouts(self) -> None:
        now = self._loop.time()
        timeouts = self._manager.timeouts
        if now >= self._last_data + timeouts.idle:
            log.info("connection idle, closing", flow=str(self.flow))
            self.close()
            return
        if self._message_started is not None and now >= self._message_started + timeouts.message:
            log.info("incomplete message timed out, closing", flow=str(self.flow))
            self._manager.message_timeouts += 1
            self.close()
            return
        self._arm_timer()


class StreamManager:
    """All stream connections of one transport kind ("tcp" or "tls"), in and out."""

    def __init__(
        self,
        transport_name: str,
        handler: StreamHandler,
        timeouts: StreamTimeouts,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.transport_name = transport_name
        self.handler = handler
        self.timeouts = timeouts
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._servers: list[asyncio.Server] = []
        self._by_id: dict[int, StreamConnection] = {}
        self._by_remote: dict[tuple[str, int], StreamConnection] = {}
        self._connecting: dict[tuple[str, int], StreamConnection] = {}
        self.message_timeouts = 0
        self.locals: list[tuple[str, int]] = []

    def __len__(self) -> int:
        return len(self._by_id)

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: StreamConnection(self, self.transport_name),
            host,
            port,
            ssl=self._server_ssl,
            reuse_address=True,
            backlog=1024,
        )
        self._servers.append(server)
        sock = server.sockets[0].getsockname()
        local = (sock[0], sock[1])
        self.locals.append(local)
        log.info("listening", transport=self.transport_name, address=f"{local[0]}:{local[1]}")
        return local

    def _register(self, connection: StreamConnection) -> None:
        assert connection.flow is not None
        self._by_id[connection.id] = connection
        self._by_remote[connection.flow.remote] = connection

    def _unregister(self, connection: StreamConnection) -> None:
        self._by_id.pop(connection.id, None)
        if (
            connection.flow is not None
            and self._by_remote.get(connection.flow.remote) is connection
        ):
            del self._by_remote[connection.flow.remote]
        for remote, pending in list(self._connecting.items()):
            if pending is connection:
                del self._connecting[remote]

    def send(self, flow: Flow, data: bytes) -> None:
        """Send over the flow's own connection, else any connection to its address, else dial."""
        connection = None
        if flow.connection is not None:
            connection = self._by_id.get(flow.connection)
        if connection is None:
            connection = self._by_remote.get(flow.remote) or self._connecting.get(flow.remote)
        if connection is None:
            connection = self._dial(flow.remote)
        connection.write(data)

    def _dial(self, remote: tuple[str, int]) -> StreamConnection:
        loop = asyncio.get_running_loop()
        connection = StreamConnection(self, self.transport_name)
        self._connecting[remote] = connection

        async def connect() -> None:
            try:
                await loop.create_connection(
                    lambda: connection, remote[0], remote[1], ssl=self._client_ssl
                )
            except OSError as error:
                log.info(
                    "connect failed", transport=self.transport_name, remote=remote, error=str(error)
                )
                self._connecting.pop(remote, None)
                self.handler.on_connection_lost(
                    Flow(self.transport_name, remote, connection=connection.id), error
                )
            else:
                self._connecting.pop(remote, None)

        task = loop.create_task(connect())
        _background.add(task)
        task.add_done_callback(_background.discard)
        return connection

    def close_flow(self, flow: Flow) -> None:
        if flow.connection is not None and (conn := self._by_id.get(flow.connection)):
            conn.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self._by_id.values()):
            connection.abort()
        for server in self._servers:
            await server.wait_closed()


_background: set[asyncio.Task[None]] = set()


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_ssl_context() -> ssl.SSLContext:
    # Phones present self-signed certificates more often than not; verification of peers is
    # a deployment decision (config) that comes with trunks.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
