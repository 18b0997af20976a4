"""`callkeeper serve` on the wire: OPTIONS over UDP (sipsak) and TCP, CRLF and STUN keep-alives,
405/501/420, and clean shutdown. Real process, real sockets, free ports."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys

import pytest

from conftest import require_tool
from support.ports import free_port
from support.server import ServerProcess, run_cli, wait_until
from support.sip_client import TcpClient, UdpClient, header_of, options_request, status_of

STUN_MAGIC = 0x2112A442


def test_sipsak_options_over_udp_gets_200(server: ServerProcess, tmp_path) -> None:
    sipsak = require_tool("sipsak")
    # sipsak cuts 5-digit ports in the URIs it builds (see shared/peers), so give it a file
    # with our own Request-URI; it adds its Via and sends the rest unchanged.
    request = tmp_path / "options.sip"
    request.write_bytes(
        (
            f"OPTIONS sip:127.0.0.1:{server.sip_port} SIP/2.0\r\n"
            "From: <sip:sipsak@127.0.0.1>;tag=abc\r\n"
            f"To: <sip:127.0.0.1:{server.sip_port}>\r\n"
            "Call-ID: sipsak-options@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    result = subprocess.run(
        [
            sipsak,
            "-vv",
            "-S",
            "-H",
            "127.0.0.1",
            "-f",
            str(request),
            "-s",
            f"sip:127.0.0.1:{server.sip_port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIP/2.0 200 OK" in result.stdout


def test_plain_sipsak_ping(server: ServerProcess) -> None:
    sipsak = require_tool("sipsak")
    result = subprocess.run(
        [sipsak, "-s", f"sip:127.0.0.1:{server.sip_port}", "-H", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_options_over_udp_advertises_capabilities(server: ServerProcess) -> None:
    with UdpClient() as client:
        client.send(options_request(server.sip_port, client.port), server.sip_port)
        reply = client.recv()
    assert reply is not None and status_of(reply) == 200
    allow = header_of(reply, "Allow") or ""
    assert "INVITE" in allow and "OPTIONS" in allow and "REGISTER" in allow
    assert "application/sdp" in (header_of(reply, "Accept") or "")
    assert "outbound" in (header_of(reply, "Supported") or "")
    via = header_of(reply, "Via") or ""
    assert f"rport={client.port}" in via and "received=127.0.0.1" in via


def test_options_over_tcp_on_the_same_port(server: ServerProcess) -> None:
    with TcpClient(server.sip_port) as client:
        client.send(options_request(server.sip_port, client.port, "TCP"))
        reply = client.read_message()
        assert reply is not None and status_of(reply) == 200
        # the connection is reused for a second request (pipelined with a ping between)
        client.send(options_request(server.sip_port, client.port, "TCP") + b"\r\n\r\n")
        second = client.read_message()
        assert second is not None and status_of(second) == 200
        assert client.read_exactly(2) == b"\r\n"


def test_crlf_ping_on_tcp_gets_pong(server: ServerProcess) -> None:
    with TcpClient(server.sip_port) as client:
        client.send(b"\r\n\r\n")
        assert client.read_exactly(2, timeout=3) == b"\r\n"
        client.send(b"\r\n\r\n")
        assert client.read_exactly(2, timeout=3) == b"\r\n"
    assert server.metric('callkeeper_keepalives_total{kind="crlf"}') >= 2


def _stun_binding_request(transaction_id: bytes, fingerprint: bool) -> bytes:
    attributes = b""
    if fingerprint:
        import zlib

        header = struct.pack("!HHI", 0x0001, 8, STUN_MAGIC) + transaction_id
        crc = (zlib.crc32(header) ^ 0x5354554E) & 0xFFFFFFFF
        attributes = struct.pack("!HHI", 0x8028, 4, crc)
    return struct.pack("!HHI", 0x0001, len(attributes), STUN_MAGIC) + transaction_id + attributes


def _decode_xor_mapped(response: bytes, transaction_id: bytes) -> tuple[str, int]:
    message_type, length, cookie = struct.unpack("!HHI", response[:8])
    assert message_type == 0x0101, hex(message_type)  # Binding success response
    assert cookie == STUN_MAGIC and response[8:20] == transaction_id
    assert length == len(response) - 20
    offset = 20
    while offset < len(response):
        attr_type, attr_len = struct.unpack("!HH", response[offset : offset + 4])
        value = response[offset + 4 : offset + 4 + attr_len]
        if attr_type == 0x0020:  # XOR-MAPPED-ADDRESS
            family = value[1]
            port = struct.unpack("!H", value[2:4])[0] ^ (STUN_MAGIC >> 16)
            assert family == 0x01
            address = struct.unpack("!I", value[4:8])[0] ^ STUN_MAGIC
            return str(ipaddress.IPv4Address(address)), port
        offset += 4 + attr_len + (-attr_len % 4)
    raise AssertionError("no XOR-MAPPED-ADDRESS in the response")


@pytest.mark.parametrize("fingerprint", [False, True])
def test_stun_binding_on_the_sip_udp_port(server: ServerProcess, fingerprint: bool) -> None:
    transaction_id = os.urandom(12)
    with UdpClient() as client:
        client.send(_stun_binding_request(transaction_id, fingerprint), server.sip_port)
        response = client.recv()
        assert response is not None
        assert _decode_xor_mapped(response, transaction_id) == ("127.0.0.1", client.port)


def test_unknown_method_501_known_unsupported_405(server: ServerProcess) -> None:
    with UdpClient() as client:
        for method, expected in (("FOOBAR", 501), ("PUBLISH", 405)):
            request = options_request(server.sip_port, client.port).replace(
                b"OPTIONS", method.encode()
            )
            client.send(request, server.sip_port)
            reply = client.recv()
            assert reply is not None and status_of(reply) == expected, reply
            assert "INVITE" in (header_of(reply, "Allow") or "")


def test_unsupported_require_gets_420_with_unsupported(server: ServerProcess) -> None:
    with UdpClient() as client:
        request = options_request(server.sip_port, client.port, extra="Require: 100rel, foo\r\n")
        client.send(request, server.sip_port)
        reply = client.recv()
    assert reply is not None and status_of(reply) == 420
    assert header_of(reply, "Unsupported") == "100rel, foo"


def test_bad_config_is_one_line_naming_the_key_and_exit_2(tmp_path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[keepalive]\nmisses = 0\n")
    for command in (["serve", "--config", str(config)], ["check-config", str(config)]):
        result = run_cli(*command)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "keepalive.misses" in lines[0], result.stderr


def test_port_in_use_is_reported_with_its_key(tmp_path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = tmp_path / "busy.toml"
        config.write_text(f'[sip]\nlisten = ["udp:127.0.0.1:{port}"]\n[store]\nurl = "memory:"\n')
        result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("callkeeper:")]
    assert len(errors) == 1 and "sip.listen.0" in errors[0] and "bind" in errors[0], result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_on_signal(tmp_path, sig: int) -> None:
    process = ServerProcess(tmp_path).start()
    with UdpClient() as client:
        assert client.options(process.sip_port) == 200
    assert process.stop(sig) == 0
    assert "stopped" in process.log()


def test_demo_defaults_with_env_overrides(tmp_path) -> None:
    """No --config: the embedded demo runs; env vars move it to free ports."""
    sip_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "CALLKEEPER_SIP__LISTEN": f'["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]',
        "CALLKEEPER_API__LISTEN": f"127.0.0.1:{api_port}",
        "CALLKEEPER_STORE__URL": "memory:",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "callkeeper.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with UdpClient() as client:
            assert (
                wait_until(lambda: client.options(sip_port, timeout=0.3), 15, what="OPTIONS") == 200
            )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
