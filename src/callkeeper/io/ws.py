"""The WebSocket transport (RFC 7118): `ws:` and `wss:` listeners for browser and WebRTC phones.

Why aiohttp and not the stream layer: a WebSocket connection starts as an HTTP/1.1 request
(the upgrade, with its headers, `Sec-WebSocket-Key` digest and subprotocol choice) and then
carries masked, fragmented, ping/pong-interleaved frames. aiohttp — already the API's server —
does all of that, well tested; on top of it this module is only the SIP part. The stream layer
would have needed an HTTP parser and a frame codec of our own.

What RFC 7118 asks of a server, and where it happens here:
- the upgrade must offer the `sip` subprotocol (§4): one that does not is refused with 400,
  before any WebSocket exists;
- each message (text or binary) is exactly one SIP message (§5): `parse_ws_message` turns it
  into the same item the TCP framer yields, so the core treats a WS connection as it treats a
  TCP one — a reliable flow with a connection id: responses and requests to a phone that
  registered over it go back over it (a browser's Via host is a made-up `*.invalid` name), a
  CRLFCRLF keep-alive gets its CRLF answer, and the connection's end is reported through
  `StreamHandler.on_connection_lost`, which makes an endpoint registered over it DOWN.
- we cannot open a WebSocket to a browser: a request for a flow whose connection is gone is
  dropped and reported as a lost connection, so its transaction fails at once.

A WebSocket that is quiet is not dead (JsSIP sends no keep-alives by default), so instead of
the TCP idle timeout a WebSocket ping goes out when nothing has arrived for half the idle time,
and a connection that does not answer it within a quarter of the idle time is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
from dataclasses import dataclass, field

import structlog
from aiohttp import WSMsgType, web

from callkeeper.io.stream import StreamHandler, StreamTimeouts
from callkeeper.sip.head_parser import MAX_HEADER_BYTES
from callkeeper.sip.parser import MAX_BODY_BYTES, parse_ws_message
from callkeeper.sip.transport import Flow

log = structlog.get_logger(__name__)

SUBPROTOCOL = "sip"  # RFC 7118 §4: the registered WebSocket subprotocol name
# The largest SIP message the parser accepts; a bigger WebSocket message closes the connection.
MAX_MESSAGE_BYTES = MAX_HEADER_BYTES + MAX_BODY_BYTES

# Distinct from the TCP/TLS connection ids only for readability of logs: every manager looks
# up its own connections.
_connection_ids = itertools.count(1)


def offers_sip(header: str) -> bool:
    """Whether a `Sec-WebSocket-Protocol` request header lists the `sip` subprotocol."""
    return any(item.strip().lower() == SUBPROTOCOL for item in header.split(","))


@dataclass(eq=False)
class WsConnection:
    """One accepted WebSocket: its flow, and an outbox written in order by one task."""

    flow: Flow
    socket: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    outbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)

    def write(self, data: bytes) -> None:
        self.outbox.put_nowait(data)

    async def send_loop(self) -> None:
        socket = self.socket
        while not socket.closed:
            data = await self.outbox.get()
            try:
                text = data.decode()
            except UnicodeDecodeError:  # a body in another charset: say it in a binary frame
                send = socket.send_bytes(data)
            else:
                send = socket.send_str(text)
            try:
                await send
            except ConnectionError:  # closing under us: the receive side reports the loss
                return

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()


class WsManager:
    """All WebSocket connections of one transport ("ws" or "wss"); the same face as a
    `StreamManager` to the driver (send, close_flow, close, len)."""

    def __init__(
        self,
        transport_name: str,
        handler: StreamHandler,
        timeouts: StreamTimeouts,
        server_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.transport_name = transport_name
        self.handler = handler
        self.timeouts = timeouts
        self._server_ssl = server_ssl
        self._by_id: dict[int, WsConnection] = {}
        self._by_remote: dict[tuple[str, int], WsConnection] = {}
        self._runner: web.AppRunner | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        if self._runner is None:
            app = web.Application()
            app.router.add_get("/{path:.*}", self._upgrade)
            self._runner = web.AppRunner(
                app, handle_signals=False, access_log=None, shutdown_timeout=1.0
            )
            await self._runner.setup()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=1024)
        site = web.SockSite(self._runner, sock, ssl_context=self._server_ssl)
        await site.start()
        name = sock.getsockname()
        local = (name[0], name[1])
        log.info("listening", transport=self.transport_name, address=f"{local[0]}:{local[1]}")
        return local

    async def _upgrade(self, request: web.Request) -> web.StreamResponse:
        if not offers_sip(request.headers.get("Sec-WebSocket-Protocol", "")):
            log.info("websocket upgrade without the sip subprotocol", peer=request.remote)
            return web.Response(
                status=400, text="a SIP WebSocket needs the 'sip' subprotocol (RFC 7118)\n"
            )
        ping_after = self.timeouts.idle / 2
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),
            heartbeat=ping_after,
            max_msg_size=MAX_MESSAGE_BYTES,
            compress=False,
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="not a WebSocket upgrade\n")
        await ws.prepare(request)
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        sock = transport.get_extra_info("sockname") if transport is not None else None
        if peer is None or sock is None:  # the peer left during the upgrade
            await ws.close()
            return ws
        flow = Flow(
            self.transport_name,
            (peer[0], peer[1]),
            (sock[0], sock[1]),
            connection=next(_connection_ids),
        )
        connection = WsConnection(flow, ws, transport)
        await self._serve(connection)
        return ws

    async def _serve(self, connection: WsConnection) -> None:
        flow = connection.flow
        assert flow.connection is not None
        self._by_id[flow.connection] = connection
        self._by_remote[flow.remote] = connection
        sender = asyncio.create_task(connection.send_loop())
        try:
            async for message in connection.socket:
                if message.type is WSMsgType.TEXT:
                    data = message.data.encode()
                elif message.type is WSMsgType.BINARY:
                    data = message.data
                else:  # ERROR (a protocol violation, a message over the size limit): done
                    break
                self.handler.on_stream_item(parse_ws_message(data), flow)
        finally:
            sender.cancel()
            del self._by_id[flow.connection]
            if self._by_remote.get(flow.remote) is connection:
                del self._by_remote[flow.remote]
            error = connection.socket.exception()
            self.handler.on_connection_lost(flow, error if isinstance(error, Exception) else None)

    def send(self, flow: Flow, data: bytes) -> None:
        """Send over the flow's connection, else over another one from the same address; with
        neither, the flow is lost (a browser cannot be called back)."""
        connection = None
        if flow.connection is not None:
            connection = self._by_id.get(flow.connection)
        if connection is None:
            connection = self._by_remote.get(flow.remote)
        if connection is None:
            log.info("no websocket for flow", flow=str(flow))
            # Later, not now: the driver is in the middle of running the core's commands.
            asyncio.get_running_loop().call_soon(self.handler.on_connection_lost, flow, None)
            return
        connection.write(data)

    def close_flow(self, flow: Flow) -> None:
        if flow.connection is not None and (connection := self._by_id.get(flow.connection)):
            connection.abort()

    async def close(self) -> None:
        for connection in list(self._by_id.values()):
            connection.abort()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner.cleanup()
