"""SIP over WebSocket (RFC 7118) against the real server: JsSIP under node as the browser phone,
baresip over UDP as the caller, aiohttp's WebSocket client for what no phone sends on purpose
(a missing subprotocol, garbage, a bare CRLFCRLF keep-alive).

baresip 1.0 cannot be the WebSocket phone: Debian's libre 1.1 has WebSocket SIP transport code,
but baresip 1.0 never enables it ("SIP register failed: Protocol not supported").
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support.baresip import Baresip, baresip_binary
from support.certificates import make_certificate
from support.ports import free_port
from support.server import ServerProcess, run_cli, wait_until
from support.sip_client import options_request, status_of
from support.wsphone import WsPhone, node_binary

pytestmark = pytest.mark.peers

PASSWORDS = {"alice": "alice-pw-7", "bob": "bob-pw-9", "carol": "carol-pw-3"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    node_binary()  # fail loudly before starting anything when the peer is missing
    baresip_binary()
    users = "".join(f'[[users]]\nname = "{n}"\npassword = "{p}"\n' for n, p in PASSWORDS.items())
    process = ServerProcess(
        tmp_path_factory.mktemp("callkeeper"),
        transports=("udp",),
        listen_extra=(f"ws:127.0.0.1:{free_port()}",),
        extra_config=f'[media]\nmode = "off"\n[log]\nlevel = "debug"\n{users}',
    )
    with process:
        yield process


def ws_url(server: ServerProcess, scheme: str = "ws") -> str:
    address = next(a for a in server.listen_extra if a.startswith(f"{scheme}:"))
    return f"{scheme}://127.0.0.1:{address.rsplit(':', 1)[1]}/"


def endpoints_of(server: ServerProcess, user: str) -> list[dict[str, Any]]:
    return [e for e in server.get_json("/api/v1/endpoints") if e["user"] == user]


def registered_phone(server: ServerProcess, user: str) -> WsPhone:
    phone = WsPhone(ws_url(server), user, PASSWORDS[user]).start()
    phone.wait_event("registered")
    return phone


def exchange(url: str, messages: list[bytes], replies: int, **connect: Any) -> list[bytes]:
    """Send each message as a WebSocket text message on one connection; collect `replies`."""

    async def run() -> list[bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, protocols=("sip",), **connect) as ws,
        ):
            assert ws.protocol == "sip"
            for message in messages:
                await ws.send_str(message.decode())
            received = []
            for _ in range(replies):
                reply = await ws.receive(timeout=5)
                assert reply.type is aiohttp.WSMsgType.TEXT, reply
                received.append(reply.data.encode())
            return received

    return asyncio.run(run())


def ws_options(port: int) -> bytes:
    # A browser's Via: a made-up .invalid host; the answer must use the connection, not it.
    return options_request(port, 9).replace(b"SIP/2.0/UDP 127.0.0.1:9", b"SIP/2.0/WS x.invalid")


# --- acceptance ----------------------------------------------------------------------------------


def test_jssip_registers_with_digest_over_ws(server: ServerProcess) -> None:
    with registered_phone(server, "carol"):
        (endpoint,) = endpoints_of(server, "carol")
        assert endpoint["transport"] == "ws" and endpoint["state"] == "alive"
        assert endpoint["contact"].endswith(".invalid;transport=ws")
        assert endpoint["user_agent"].startswith("JsSIP")
        assert server.metric('callkeeper_sip_connections{transport="ws"}') >= 1


def test_udp_phone_calls_ws_phone_over_its_connection(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice = Baresip(tmp_path / "alice", "alice", server.sip_port, PASSWORDS["alice"])
    with alice, registered_phone(server, "bob") as bob:
        assert alice.ctl is not None
        wait_until(
            lambda: [e for e in endpoints_of(server, "alice") if e["state"] == "alive"],
            10,
            what="alice registered over udp",
        )
        alice.ctl.dial(f"sip:bob@127.0.0.1:{server.sip_port}")
        incoming = bob.wait_event("incoming")
        assert incoming["from"].startswith("sip:alice@")
        bob.command("answer")
        bob.wait_event("confirmed")  # our ACK reached it over the WebSocket
        alice.ctl.wait_event("CALL_ESTABLISHED", 10)
        wait_until(
            lambda: [c for c in server.get_json("/api/v1/calls") if c["state"] == "active"],
            5,
            what="call active in the API",
        )
        bob.command("hangup")  # its BYE comes in over the WebSocket, alice's leg ends
        alice.ctl.wait_event("CALL_CLOSED", 10)
        bob.wait_event("ended")
        wait_until(
            lambda: all(c["state"] == "ended" for c in server.get_json("/api/v1/calls")),
            5,
            what="the call ended in the API",
        )


def test_lost_websocket_marks_endpoint_down(server: ServerProcess) -> None:
    failures = server.metric("callkeeper_endpoint_failures_total")
    phone = registered_phone(server, "carol")
    try:
        wait_until(
            lambda: [e for e in endpoints_of(server, "carol") if e["state"] == "alive"],
            5,
            what="carol alive",
        )
    finally:
        phone.kill()
    wait_until(
        lambda: all(e["state"] == "down" for e in endpoints_of(server, "carol")),
        2,
        what="carol DOWN after her WebSocket closed",
    )
    assert server.metric("callkeeper_endpoint_failures_total") > failures
    assert "reason=connection-lost" in server.log()


def test_crlf_keepalive_is_answered_with_crlf(server: ServerProcess) -> None:
    before = server.metric('callkeeper_keepalives_total{kind="crlf"}')
    assert exchange(ws_url(server), [b"\r\n\r\n"], 1) == [b"\r\n"]
    assert server.metric('callkeeper_keepalives_total{kind="crlf"}') == before + 1


def test_upgrade_without_sip_subprotocol_is_refused(server: ServerProcess) -> None:
    async def upgrade() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(ws_url(server)):
                    return 101
            except aiohttp.WSServerHandshakeError as error:
                return error.status

    assert asyncio.run(upgrade()) == 400


def test_garbage_is_dropped_bad_request_answered_and_listener_keeps_serving(
    server: ServerProcess,
) -> None:
    port = int(ws_url(server).rstrip("/").rsplit(":", 1)[1])
    dropped = server.metric('callkeeper_sip_dropped_total{reason="unparseable"}')
    short_body = ws_options(port).replace(b"Content-Length: 0", b"Content-Length: 40")
    replies = exchange(ws_url(server), [b"\x01garbage\r\n\r\n", short_body, ws_options(port)], 2)
    # the garbage got nothing; the short body (as over UDP, §18.3) a 400; the next OPTIONS a 200
    assert [status_of(reply) for reply in replies] == [400, 200]
    assert b"SIP/2.0/WS x.invalid" in replies[1] and b"received=127.0.0.1" in replies[1]
    assert server.metric('callkeeper_sip_dropped_total{reason="unparseable"}') == dropped + 1


# --- wss and configuration ----------------------------------------------------------------------


def test_wss_listener_uses_the_tls_certificate(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    port = free_port()
    process = ServerProcess(
        tmp_path / "callkeeper",
        transports=("udp",),
        listen_extra=(f"wss:127.0.0.1:{port}",),
        sip_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"\n',
    )
    with process:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        (reply,) = exchange(f"wss://127.0.0.1:{port}/", [ws_options(port)], 1, ssl=context)
        assert status_of(reply) == 200


@pytest.mark.parametrize(
    ("listen", "sip_extra", "ok", "words"),
    [
        ('["ws:127.0.0.1:8088"]', "", True, ()),
        ('["ws:127.0.0.1:99999"]', "", False, ("sip", "listen", "out of range")),
        ('["ws:127.0.0.1"]', "", False, ("sip", "listen", "TRANSPORT:HOST:PORT")),
        ('["wss:127.0.0.1:8443"]', "", False, ("sip", "tls_cert")),
    ],
)
def test_check_config_ws_addresses(
    tmp_path: Path, listen: str, sip_extra: str, ok: bool, words: tuple[str, ...]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[sip]\nlisten = {listen}\n{sip_extra}")
    result = run_cli("check-config", str(config))
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert all(word in result.stderr for word in words), result.stderr


def test_ws_address_in_use_is_a_startup_error(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "first", transports=("udp",)) as first:
        config = tmp_path / "c.toml"
        config.write_text(f'[sip]\nlisten = ["ws:127.0.0.1:{first.api_port}"]\n')
        result = run_cli("serve", "--config", str(config), timeout=20)
    assert result.returncode == 2
    assert "sip.listen.0" in result.stderr and "cannot listen" in result.stderr
