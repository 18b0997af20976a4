"""Hostile input on the wire: huge messages, 10,000 header lines, NUL and non-UTF-8 bytes,
a Content-Length beyond the body, and a peer trickling one byte a second. The server answers
what it can, drops what it cannot, never raises, and keeps answering OPTIONS throughout."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from support.server import ServerProcess, wait_until
from support.sip_client import TcpClient, UdpClient, options_request, status_of

MESSAGE_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("abuse"), sip_extra=f"tcp_message_timeout = {MESSAGE_TIMEOUT}\n"
    )
    with process:
        yield process


def assert_still_serving(server: ServerProcess) -> None:
    with UdpClient() as client:
        assert client.options(server.sip_port) == 200
    assert server.metric("callkeeper_core_errors_total") == 0


def test_largest_udp_datagram_is_handled(server: ServerProcess) -> None:
    request = options_request(server.sip_port, 1)
    head, _, _ = request.partition(b"Content-Length")
    padding = b"X-Pad: " + b"a" * (65507 - len(head) - 200) + b"\r\n"
    datagram = head + padding + b"Content-Length: 0\r\n\r\n"
    assert len(datagram) <= 65507
    with UdpClient() as client:
        datagram = datagram.replace(b"127.0.0.1:1;", f"127.0.0.1:{client.port};".encode())
        client.send(datagram, server.sip_port)
        reply = client.recv()
    # a long header line is fine within our limits... or rejected as too large: never silence
    # without a count, never a crash.
    assert reply is None or status_of(reply) in (200, 513)
    assert_still_serving(server)


def test_two_megabyte_message_on_tcp_is_refused(server: ServerProcess) -> None:
    body = b"v=0\r\n" + b"a=x\r\n" * (2 * 1024 * 1024 // 5)
    with TcpClient(server.sip_port) as client:
        request = options_request(server.sip_port, client.port, "TCP").replace(
            b"Content-Length: 0", b"Content-Type: application/sdp\r\nContent-Length: %d" % len(body)
        )
        # the server may close while we are still sending: refused either way
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(request + body)
        reply = client.read_message(timeout=5)
        assert reply is None or status_of(reply) == 513
        assert client.closed_by_peer(5)
    assert_still_serving(server)


def test_ten_thousand_header_lines(server: ServerProcess) -> None:
    def dropped_total() -> float:
        return sum(v for k, v in server.metrics().items() if k.startswith("callkeeper_sip_dropped"))

    dropped_before = dropped_total()
    with UdpClient() as flooder, UdpClient() as prober:
        request = options_request(server.sip_port, flooder.port)
        head, _, tail = request.partition(b"Content-Length")
        flood = b"".join(b"a:%d\r\n" % (i % 10) for i in range(10_000))
        started = time.monotonic()
        flooder.send(head + flood + b"Content-Length" + tail, server.sip_port)
        # the next request is answered at once: the flood cost no quadratic time
        assert prober.options(server.sip_port) == 200
        assert time.monotonic() - started < 1.0
        reply = flooder.recv(timeout=0.2)
    if reply is None:  # dropped: then it must have been counted
        assert dropped_total() == dropped_before + 1
    else:
        assert status_of(reply) == 513, reply
    assert_still_serving(server)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda r: r.replace(b"From: <sip:tester", b"From: <sip:te\x00ster"),
        lambda r: r.replace(
            b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSubject: \xff\xfe\xc3\x28\r\n"
        ),
        lambda r: r.replace(b"OPTIONS sip", b"OPT\x00IONS sip"),
        lambda r: b"\x00" * 100,
        lambda r: bytes(range(256)) * 4,
    ],
    ids=["nul-in-header", "non-utf8-header", "nul-in-method", "all-nul", "all-bytes"],
)
def test_binary_garbage(server: ServerProcess, mangle) -> None:  # type: ignore[no-untyped-def]
    with UdpClient() as client:
        client.send(mangle(options_request(server.sip_port, client.port)), server.sip_port)
        reply = client.recv(timeout=0.5)
    # answerable ones get a 400 (or 200: non-UTF-8 text in Subject is legal UTF-8-or-not
    # opaque text to us), the rest are dropped and counted
    assert reply is None or status_of(reply) in (200, 400)
    assert_still_serving(server)


def test_content_length_beyond_body_on_tcp_waits_then_times_out(server: ServerProcess) -> None:
    with TcpClient(server.sip_port) as client:
        request = options_request(server.sip_port, client.port, "TCP").replace(
            b"Content-Length: 0", b"Content-Length: 500"
        )
        started = time.monotonic()
        client.send(request + b"only a few bytes")
        assert client.read_message(timeout=MESSAGE_TIMEOUT / 2) is None  # it waits for more
        assert client.closed_by_peer(MESSAGE_TIMEOUT * 3)
        assert time.monotonic() - started >= MESSAGE_TIMEOUT * 0.9
    assert_still_serving(server)


def test_peer_sending_one_byte_per_second_is_cut_off(server: ServerProcess) -> None:
    request = options_request(server.sip_port, 1, "TCP")
    with TcpClient(server.sip_port) as client:
        started = time.monotonic()
        closed = False
        for byte in request:
            try:
                client.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            assert_still_serving(server)  # everyone else is served meanwhile
            if client.closed_by_peer(1.0):
                closed = True
                break
        assert closed
        assert time.monotonic() - started < MESSAGE_TIMEOUT + 3
    wait_until(
        lambda: server.metric('callkeeper_sip_connections{transport="tcp"}') == 0,
        5,
        what="the slow connection to be gone",
    )
