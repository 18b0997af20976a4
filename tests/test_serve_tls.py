"""SIP over TLS: OPTIONS and CRLF keep-alives on a `tls:` listener with a self-signed cert."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.certificates import make_certificate
from support.server import ServerProcess, run_cli
from support.sip_client import options_request, status_of


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("tls")
    cert, key = make_certificate(workdir)
    process = ServerProcess(
        workdir, transports=("udp", "tls"), sip_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    )
    with process:
        yield process


def tls_connect(port: int) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_until(sock: ssl.SSLSocket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_options_over_tls(tls_server: ServerProcess) -> None:
    with tls_connect(tls_server.sip_port) as sock:
        sock.sendall(options_request(tls_server.sip_port, sock.getsockname()[1], "TLS"))
        reply = read_until(sock, b"\r\n\r\n")
        assert status_of(reply) == 200
        sock.sendall(b"\r\n\r\n")
        assert sock.recv(2) == b"\r\n"


def test_tls_without_certificate_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[sip]\nlisten = ["tls:127.0.0.1:5061"]\n')
    result = run_cli("check-config", str(config))
    assert result.returncode == 2 and "sip" in result.stderr and "tls_cert" in result.stderr
