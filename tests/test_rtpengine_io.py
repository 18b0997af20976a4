"""The NG protocol client and the rtpengine backend's start-up, against a real rtpengine."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from callkeeper.calls.model import Call, Leg
from callkeeper.calls.rtpengine_anchor import RtpengineAnchor
from callkeeper.io import ng
from callkeeper.io.ng import NgClient, NgError, bdecode, bencode
from callkeeper.io.rtpengine import DtmfLog, RtpengineMedia
from callkeeper.sdp import parse_sdp
from callkeeper.sip.transport import Flow
from support.ports import free_port
from support.rtpengine import Rtpengine
from support.server import run_cli


def test_bencode_round_trips_what_ng_carries() -> None:
    value = {"command": "offer", "flags": ["trust-address", "port-latching"], "repeat-times": 3}
    encoded = bencode(value)
    assert encoded == (
        b"d7:command5:offer5:flagsl13:trust-address13:port-latchinge12:repeat-timesi3ee"
    )
    assert bdecode(encoded) == {
        "command": b"offer",
        "flags": [b"trust-address", b"port-latching"],
        "repeat-times": 3,
    }


@pytest.mark.parametrize(
    "data", [b"", b"d", b"d3:abc", b"5:abc", b"i12", b"l1:ae trailing", b"x", b"d1:ai1e"]
)
def test_bdecode_refuses_what_is_not_one_bencoded_value(data: bytes) -> None:
    with pytest.raises(ValueError):
        bdecode(data)


def test_a_silent_peer_is_an_ng_error_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ng, "REQUEST_TIMEOUT", 0.05)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))

        async def ask() -> None:
            client = await NgClient.open(silent.getsockname())
            try:
                with pytest.raises(NgError, match="no answer to 'ping'"):
                    await client.request("ping")
            finally:
                client.close()

        asyncio.run(ask())
        silent.settimeout(1)
        received = [silent.recv(1000) for _ in range(ng.ATTEMPTS)]
    # every attempt is the same datagram: rtpengine answers a repeated cookie from its cache
    assert len(set(received)) == 1 and received[0].endswith(b"d7:command4:pinge")


def test_requests_in_flight_together_get_their_own_replies(tmp_path: Path) -> None:
    with Rtpengine(tmp_path) as rtpengine:

        async def ask() -> list[dict[str, object]]:
            client = await NgClient.open(("127.0.0.1", rtpengine.ng_port))
            try:
                pings = [client.request("ping") for _ in range(20)]
                with pytest.raises(NgError, match="Unknown call-id"):  # rtpengine's own reason
                    await client.request("query", call_id="no-such-call")
                return await asyncio.gather(*pings)
            finally:
                client.close()

        replies = asyncio.run(ask())
    assert [reply["result"] for reply in replies] == ["pong"] * 20


def test_the_backend_keeps_a_pool_of_slots_and_deletes_a_finished_call(tmp_path: Path) -> None:
    with Rtpengine(tmp_path) as rtpengine:

        async def run() -> tuple[set[str], str, set[str]]:
            loop = asyncio.get_running_loop()
            client = await NgClient.open(("127.0.0.1", rtpengine.ng_port))
            anchor = RtpengineAnchor()
            media = RtpengineMedia(client, anchor, loop, pool_size=4)
            try:
                await media.start()
                before = set(await asyncio.to_thread(rtpengine.calls))
                a = Leg(id="A", is_caller=True, flow=Flow("udp", ("127.0.0.1", 5062)))
                call = Call(id="call-1", a=a, created=0.0, callee="bob")
                anchor.rewrite(call, a, Leg(id="B", is_caller=False, flow=a.flow), _sdp(30000))
                anchor.release_call(call.id)
                taken = ""
                while (command := anchor.next_command()) is not None:
                    taken = getattr(command, "slot", taken)
                    media(command)
                deadline = loop.time() + 5
                while True:  # the slot deleted, and the pool topped up again
                    after = set(await asyncio.to_thread(rtpengine.calls))
                    if (taken not in after and len(after) == 4) or loop.time() > deadline:
                        return before, taken, after
                    await asyncio.sleep(0.02)
            finally:
                media.close()

        before, taken, after = asyncio.run(run())
    assert len(before) == 4 and taken in before
    assert taken not in after and len(after) == 4 and len(after - before) == 1


def test_keys_rtpengine_reports_reach_the_core_as_the_sending_leg(tmp_path: Path) -> None:
    """rtpengine (`--dtmf-log-dest`) sees alice's RFC 4733 event on its way to bob and reports
    it; `DtmfLog` names alice's leg. Junk on the log socket, and a report from another host,
    are dropped and counted."""
    log_port = free_port()
    options = (f"--dtmf-log-dest=127.0.0.1:{log_port}",)
    with Rtpengine(tmp_path, options=options) as rtpengine:

        async def run() -> tuple[list[tuple[str, str]], int]:
            loop = asyncio.get_running_loop()
            client = await NgClient.open(("127.0.0.1", rtpengine.ng_port))
            anchor = RtpengineAnchor()
            media = RtpengineMedia(client, anchor, loop, pool_size=1)
            keys: list[tuple[str, str]] = []
            got_key = asyncio.Event()

            def on_key(leg: str, key: str) -> None:
                keys.append((leg, key))
                got_key.set()

            dtmf = await DtmfLog.listen(("127.0.0.1", log_port), anchor, on_key, "127.0.0.1")
            alice, bob = _phone(), _phone()
            try:
                await media.start()
                flow = Flow("udp", ("127.0.0.1", 5062))
                a, b = (
                    Leg(id="A", is_caller=True, flow=flow),
                    Leg(id="B", is_caller=False, flow=flow),
                )
                call = Call(id="call-1", a=a, created=0.0, callee="bob")
                anchor.rewrite(call, a, b, _sdp(alice.getsockname()[1], events=True))
                to_alice = anchor.rewrite(call, b, a, _sdp(bob.getsockname()[1], events=True))
                slot_id = ""
                while (command := anchor.next_command()) is not None:
                    slot_id = getattr(command, "slot", slot_id)
                    media(command)
                await media.drained()  # both sides negotiated
                relay_port = parse_sdp(to_alice).media[0].port
                for packet in _keypress(event=5):
                    alice.sendto(packet, ("127.0.0.1", relay_port))
                    await asyncio.sleep(0.02)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                    sender.sendto(b"{not json", ("127.0.0.1", log_port))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                    # a well-formed report of a key, but not from rtpengine's host
                    stranger.bind(("127.0.0.2", 0))
                    forged = b'{"callid": "%s", "source_tag": "a", "event": 9}' % slot_id.encode()
                    stranger.sendto(forged, ("127.0.0.1", log_port))
                await asyncio.wait_for(got_key.wait(), 5)
                deadline = loop.time() + 2
                while dtmf.dropped < 2 and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                return keys, dtmf.dropped
            finally:
                dtmf.close()
                media.close()
                alice.close()
                bob.close()

        keys, dropped = asyncio.run(run())
    assert keys == [("A", "5")]  # not the forged 9
    assert dropped == 2


def _phone() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _keypress(event: int) -> list[bytes]:
    """Ten packets of PCMU, then one RFC 4733 event (three updates, three end copies)."""
    packets = [
        struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 77) + b"\xff" * 160 for seq in range(10)
    ]
    for i in range(6):
        marker = 0x80 if i == 0 else 0
        end = 0x80 if i >= 3 else 0
        header = struct.pack("!BBHII", 0x80, 101 | marker, 10 + i, 1600, 77)
        packets.append(header + struct.pack("!BBH", event, end | 10, 160 * (i + 1)))
    return packets


def test_serve_refuses_to_start_without_rtpengine_naming_the_key(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        config = tmp_path / "rtpengine.toml"
        config.write_text(
            '[sip]\nlisten = ["udp:127.0.0.1:0"]\n[api]\nlisten = "127.0.0.1:0"\n'
            f'[store]\nurl = "memory:"\n[media]\nmode = "rtpengine"\n'
            f'rtpengine = "udp:127.0.0.1:{port}"\n'
        )
        result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("callkeeper:")]
    assert len(errors) == 1 and "media.rtpengine" in errors[0], result.stderr


@pytest.mark.parametrize("key", ["rtpengine", "rtpengine_dtmf"])
def test_a_malformed_rtpengine_address_is_a_config_error(tmp_path: Path, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[media]\nmode = "rtpengine"\n{key} = "tcp:localhost"\n')
    result = run_cli("check-config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"media.{key}" in lines[0], result.stderr


def _sdp(port: int, events: bool = False) -> bytes:
    formats = "0 101\r\na=rtpmap:101 telephone-event/8000" if events else "0"
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {formats}\r\n"
    ).encode()
