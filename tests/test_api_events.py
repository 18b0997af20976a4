"""The event stream (`GET /api/v1/events`): events arrive as they happen, and a connected client
does not keep the server from shutting down on SIGTERM."""

from __future__ import annotations

import http.client
import signal
import time
from pathlib import Path

from support.server import ServerProcess
from support.sip_client import UdpClient, options_request

USERS = '[[users]]\nname = "bob"\nstatic_contacts = ["sip:bob@127.0.0.1:9"]\n'


def test_sse_stream_and_clean_shutdown_with_a_client_connected(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, extra_config=USERS, sip_extra='trusted_sources = ["127.0.0.1"]\n'
    ).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=10)
    connection.request("GET", "/api/v1/events")
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    # a call to bob's silent device: call.started arrives on the stream
    with UdpClient() as client:
        invite = options_request(server.sip_port, client.port).replace(b"OPTIONS", b"INVITE")
        invite = invite.replace(
            f"sip:127.0.0.1:{server.sip_port}".encode(),
            f"sip:bob@127.0.0.1:{server.sip_port}".encode(),
            1,
        )
        invite = invite.replace(
            b"Content-Length: 0", b"Contact: <sip:tester@127.0.0.1>\r\nContent-Length: 0"
        )
        client.send(invite, server.sip_port)
        seen = b""
        deadline = time.monotonic() + 5
        while b"event: call.started" not in seen and time.monotonic() < deadline:
            seen += response.fp.readline()
    assert b"event: call.started" in seen
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 5
    connection.close()
