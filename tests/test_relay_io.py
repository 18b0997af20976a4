"""The built-in RTP relay (io/relay.py) with real UDP sockets standing in for the phones.

Each test opens relay sides on free ports (probed: an even port and the one above it), points
them at "phones" (plain asyncio datagram endpoints on loopback, an RTP and an RTCP socket each)
with the same commands the media anchor queues, and checks what the phones receive: forwarding
both ways with symmetric latching, a NAT'd phone latched by its first packet, bad datagrams
dropped and counted while the real stream goes on untouched, prompts played as 20 ms G.711
packets carrying the prompt's samples, and one continuous stream across a re-bridge.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import statistics
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from callkeeper.calls.media_anchor import (
    CloseSide,
    Connect,
    OpenSide,
    Play,
    Record,
    SetPeer,
    WatchDigits,
)
from callkeeper.io.prompts import load_prompt_samples
from callkeeper.io.relay import MediaRelay
from callkeeper.io.voicemail import Recording
from callkeeper.media import g711
from callkeeper.media.dtmf import telephone_event_packets
from callkeeper.media.g711 import Codec
from callkeeper.media.player import SAMPLES_PER_FRAME, encode_frames
from callkeeper.media.rtp import RtpPacket, parse
from support.ports import udp_port_free

HOST = "127.0.0.1"
_handed_out: set[int] = set()


def free_pair(low: int = 30000, high: int = 32000) -> int:
    """An even port that is free, with the odd one above it, below the ephemeral range."""
    for _ in range(500):
        port = random.randrange(low, high, 2)
        if port in _handed_out or not (udp_port_free(port) and udp_port_free(port + 1)):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port pair")


async def eventually(predicate: Callable[[], object], timeout: float = 3.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.005)


class Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int], float]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr, time.monotonic()))

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_socket(port: int = 0) -> Socket:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Socket, local_addr=(HOST, port)
    )
    return protocol


@dataclass
class Phone:
    """An RTP socket and an RTCP socket on the port above it."""

    rtp: Socket
    rtcp: Socket
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    sequence: int = field(default_factory=lambda: random.getrandbits(16))
    timestamp: int = field(default_factory=lambda: random.getrandbits(32))

    @property
    def address(self) -> tuple[str, int]:
        return self.rtp.address

    def packet(self, payload: bytes, *, marker: bool = False) -> bytes:
        data = RtpPacket(0, self.sequence, self.timestamp, self.ssrc, payload, marker).serialize()
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(payload)) & 0xFFFFFFFF
        return data

    def talk(self, port: int, payload: bytes) -> None:
        self.rtp.send(self.packet(payload), port)

    def heard(self) -> list[RtpPacket]:
        return [parse(data) for data, _, _ in self.rtp.received]

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


async def open_phone() -> Phone:
    port = free_pair(32000, 32700)
    return Phone(await open_socket(port), await open_socket(port + 1))


def rtcp_receiver_report(ssrc: int) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


class Rig:
    """A relay plus helpers to open sides aimed at phones."""

    def __init__(self) -> None:
        self.relay = MediaRelay(HOST)
        self.ports: dict[str, int] = {}
        self.phones: list[Phone] = []

    def open(self, side: str) -> int:
        port = free_pair()
        self.ports[side] = port
        self.relay(OpenSide(side, port))
        return port

    async def phone(self, side: str, *, nat: bool = False) -> Phone:
        """A phone on `side`, its SDP naming its own address (or a wrong one when `nat`)."""
        phone = await open_phone()
        self.phones.append(phone)
        address = ("10.0.0.99", 4000) if nat else phone.address
        self.relay(SetPeer(side, address, latch_any=nat))
        return phone

    def close(self) -> None:
        self.relay.close()
        for phone in self.phones:
            phone.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    yield rig
    rig.close()


def frames(count: int, fill: int = 0x55) -> list[bytes]:
    return [bytes([(fill + i) & 0xFF]) * 160 for i in range(count)]


async def call(rig: Rig) -> tuple[Phone, Phone, int, int]:
    port_a, port_b = rig.open("a"), rig.open("b")
    phone_a, phone_b = await rig.phone("a"), await rig.phone("b")
    rig.relay(Connect("a", "b"))
    return phone_a, phone_b, port_a, port_b


def assert_one_continuous_stream(packets: list[RtpPacket]) -> None:
    assert len({p.ssrc for p in packets}) == 1, {p.ssrc for p in packets}
    steps = {(b.sequence - a.sequence) & 0xFFFF for a, b in itertools.pairwise(packets)}
    assert steps == {1}, steps
    advances = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)]
    assert all(0 < step < 8000 for step in advances), advances


# --- forwarding and latching ---------------------------------------------------------------------
async def test_media_is_forwarded_both_ways_from_the_relay_ports(rig: Rig) -> None:
    phone_a, phone_b, port_a, port_b = await call(rig)
    sent_a, sent_b = frames(20, 0x10), frames(20, 0x80)
    for payload_a, payload_b in zip(sent_a, sent_b, strict=False):
        phone_a.talk(port_a, payload_a)
        phone_b.talk(port_b, payload_b)
        await asyncio.sleep(0.002)
    await eventually(lambda: len(phone_a.rtp.received) == 20 and len(phone_b.rtp.received) == 20)
    # what a phone sends reaches the other one, from the other side's port (symmetric RTP)
    assert [p.payload for p in phone_b.heard()] == sent_a
    assert [p.payload for p in phone_a.heard()] == sent_b
    assert {addr for _, addr, _ in phone_b.rtp.received} == {(HOST, port_b)}
    assert {addr for _, addr, _ in phone_a.rtp.received} == {(HOST, port_a)}
    assert_one_continuous_stream(phone_a.heard())
    assert_one_continuous_stream(phone_b.heard())
    # RTCP goes from RTCP port to RTCP port, as it came
    report = rtcp_receiver_report(phone_a.ssrc)
    phone_a.rtcp.send(report, port_a + 1)
    await eventually(lambda: phone_b.rtcp.received, what="RTCP at b")
    assert phone_b.rtcp.received[0][:2] == (report, (HOST, port_b + 1))
    assert rig.relay.packets_in == 41 and rig.relay.packets_out == 41
    assert not rig.relay.dropped


async def test_a_burst_queued_on_both_sides_is_forwarded_whole_and_in_order(rig: Rig) -> None:
    """Many datagrams waiting on one socket when the relay wakes (a busy loop): every one is
    read in turn, none is left behind until the next packet happens to arrive."""
    phone_a, phone_b, port_a, port_b = await call(rig)
    sent_a, sent_b = frames(200, 0x10), frames(200, 0x80)
    for payload_a, payload_b in zip(sent_a, sent_b, strict=True):
        phone_a.talk(port_a, payload_a)
        phone_b.talk(port_b, payload_b)
    await eventually(lambda: len(phone_a.rtp.received) == 200 and len(phone_b.rtp.received) == 200)
    assert [p.payload for p in phone_b.heard()] == sent_a
    assert [p.payload for p in phone_a.heard()] == sent_b
    assert rig.relay.packets_in == 400 and rig.relay.packets_out == 400
    assert not rig.relay.dropped


async def test_forwarding_latency_on_loopback(rig: Rig) -> None:
    phone_a, phone_b, port_a, _ = await call(rig)
    sent: list[float] = []
    for payload in frames(200):
        sent.append(time.monotonic())
        phone_a.talk(port_a, payload)
        await asyncio.sleep(0.001)
    await eventually(lambda: len(phone_b.rtp.received) == 200)
    delays = sorted(
        1000 * (at - t0) for (_, _, at), t0 in zip(phone_b.rtp.received, sent, strict=False)
    )
    p50, p99 = statistics.median(delays), delays[int(0.99 * len(delays)) - 1]
    print(f"relay forwarding delay (same loop as the phones): p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    assert p99 < 50


async def test_a_phone_behind_nat_is_latched_by_its_first_packet(rig: Rig) -> None:
    port_a, port_b = rig.open("a"), rig.open("b")
    phone_a = await rig.phone("a", nat=True)  # its SDP names 10.0.0.99:4000
    phone_b = await rig.phone("b")
    rig.relay(Connect("a", "b"))
    phone_b.talk(port_b, b"\x01" * 160)  # before a has sent: goes to the SDP's address
    await eventually(lambda: rig.relay.packets_out == 1)
    assert not phone_a.rtp.received
    phone_a.talk(port_a, b"\x02" * 160)  # latches a to where it really is
    await eventually(lambda: phone_b.rtp.received)
    phone_b.talk(port_b, b"\x03" * 160)
    await eventually(lambda: phone_a.rtp.received, what="b's audio at the NAT'd phone")
    assert phone_a.heard()[0].payload == b"\x03" * 160
    # once latched, another source is foreign even though the leg is "behind NAT"
    stranger = await open_phone()
    rig.phones.append(stranger)
    stranger.talk(port_a, b"\x04" * 160)
    await eventually(lambda: rig.relay.dropped["foreign-source"] == 1)
    assert len(phone_b.rtp.received) == 1


async def test_without_nat_only_the_signalled_address_is_latched(rig: Rig) -> None:
    phone_a, phone_b, port_a, _ = await call(rig)
    impostor = await open_phone()
    rig.phones.append(impostor)
    impostor.talk(port_a, b"\x09" * 160)  # first, but not from a's SDP address
    phone_a.talk(port_a, b"\x0a" * 160)
    await eventually(lambda: phone_b.rtp.received)
    await eventually(lambda: rig.relay.packets_in == 2)
    assert [p.payload for p in phone_b.heard()] == [b"\x0a" * 160]
    assert rig.relay.dropped == {"foreign-source": 1}


async def test_a_new_set_peer_relatches(rig: Rig) -> None:
    phone_a, phone_b, port_a, port_b = await call(rig)
    phone_a.talk(port_a, b"\x01" * 160)
    await eventually(lambda: phone_b.rtp.received)
    moved = await open_phone()  # a re-INVITE moved a's media to another address
    rig.phones.append(moved)
    rig.relay(SetPeer("a", moved.address, latch_any=False))
    phone_b.talk(port_b, b"\x02" * 160)
    await eventually(lambda: moved.rtp.received, what="b's audio at a's new address")
    moved.talk(port_a, b"\x03" * 160)
    phone_a.talk(port_a, b"\x04" * 160)  # the old address is foreign now
    await eventually(lambda: rig.relay.packets_in == 4)
    await eventually(lambda: len(phone_b.rtp.received) == 2)
    assert [p.payload for p in phone_b.heard()] == [b"\x01" * 160, b"\x03" * 160]
    assert rig.relay.dropped == {"foreign-source": 1}
    assert not phone_a.rtp.received


async def test_bad_datagrams_are_dropped_and_counted_while_audio_flows(rig: Rig) -> None:
    phone_a, phone_b, port_a, _ = await call(rig)
    stranger = await open_phone()
    rig.phones.append(stranger)
    noise = random.Random(7)
    bad_sent = 0
    real = frames(50)
    for index, payload in enumerate(real):
        phone_a.talk(port_a, payload)
        if index == 0:
            await eventually(lambda: phone_b.rtp.received)  # latched
        if index % 5 == 1:
            stranger.rtp.send(stranger.packet(b"\xee" * 160), port_a)  # foreign source
            own = RtpPacket(0, phone_a.sequence, phone_a.timestamp, phone_a.ssrc, b"\xee" * 160)
            phone_a.rtp.send(own.serialize()[:7], port_a)  # truncated header
            wrong = bytearray(own.serialize())
            wrong[0] = 0x40  # version 1
            phone_a.rtp.send(bytes(wrong), port_a)
            junk = bytes(noise.getrandbits(8) for _ in range(noise.randrange(1, 200)))
            stranger.rtp.send(junk, port_a)  # random bytes, from anywhere
            bad_sent += 4
        await asyncio.sleep(0.002)
    await eventually(lambda: sum(rig.relay.dropped.values()) == bad_sent, what="drops counted")
    await eventually(lambda: len(phone_b.rtp.received) == len(real))
    heard = phone_b.heard()
    assert [p.payload for p in heard] == real  # nothing bad got through, nothing real was lost
    assert_one_continuous_stream(heard)
    dropped = dict(rig.relay.dropped)
    print("drops by reason:", dropped)
    assert dropped["foreign-source"] >= 10  # the stranger's RTP, and its junk that parsed
    assert dropped["truncated"] >= 10 and dropped["wrong-version"] >= 10
    assert set(dropped) <= {"foreign-source", "truncated", "wrong-version", "bad-padding"}


# --- playing prompts ----------------------------------------------------------------------------
@pytest.mark.parametrize("payload_type", [0, 8])
async def test_play_sends_20_ms_g711_frames_of_the_prompt(rig: Rig, payload_type: int) -> None:
    port = rig.open("a")
    phone = await rig.phone("a")
    started = time.monotonic()
    rig.relay(Play("a", ("reconnecting",), "music", payload_type))
    await eventually(lambda: len(phone.rtp.received) >= 50, what="50 prompt packets")
    elapsed = phone.rtp.received[49][2] - started
    packets = phone.heard()[:50]
    assert {addr for _, addr, _ in phone.rtp.received} == {(HOST, port)}
    assert {p.payload_type for p in packets} == {payload_type}
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert_one_continuous_stream(packets)
    assert {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)} == {
        SAMPLES_PER_FRAME
    }
    assert {len(p.payload) for p in packets} == {SAMPLES_PER_FRAME}
    codec = Codec(payload_type)
    received = g711.decode(b"".join(p.payload for p in packets), codec)
    prompt = load_prompt_samples("reconnecting")[: len(received)]
    expected = g711.decode(g711.encode(prompt, codec), codec)
    assert np.array_equal(received, expected)
    # G.711 costs little: what was decoded is the prompt within the law's quantisation
    assert np.max(np.abs(received.astype(np.int32) - prompt)) <= 1024
    print(f"50 packets in {elapsed * 1000:.0f} ms (49 intervals of 20 ms = 980 ms)")
    assert 0.9 <= elapsed <= 1.6
    assert rig.relay.players == 1


def tone(seconds: float, frequency: float) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


async def test_the_music_loop_follows_the_announcement(rig: Rig) -> None:
    rig.open("a")
    phone = await rig.phone("a")
    rig.relay.add_prompt("beep", tone(0.2, 1000))  # 10 frames
    rig.relay.add_prompt("tune", tone(0.1, 300))  # 5 frames, looped
    rig.relay(Play("a", ("beep", "beep"), "tune", 0))
    await eventually(lambda: len(phone.rtp.received) >= 32)
    beep = encode_frames(tone(0.2, 1000), Codec.PCMU)
    tune = encode_frames(tone(0.1, 300), Codec.PCMU)
    payloads = [p.payload for p in phone.heard()[:32]]
    assert payloads == list(beep) * 2 + list(tune) * 2 + list(tune[:2])


async def test_without_a_loop_silence_follows_the_prompt(rig: Rig) -> None:
    rig.open("a")
    phone = await rig.phone("a")
    rig.relay.add_prompt("beep", tone(0.1, 1000))
    rig.relay(Play("a", ("beep",), None, 8))
    await eventually(lambda: len(phone.rtp.received) >= 8)
    heard = phone.heard()[:8]
    assert [p.payload for p in heard[:5]] == list(encode_frames(tone(0.1, 1000), Codec.PCMA))
    assert {p.payload for p in heard[5:]} == {bytes([Codec.PCMA.silence]) * 160}
    assert_one_continuous_stream(heard)
    rig.relay(Play("a", ("no-such-prompt",), None, 0))  # unknown: logged, silence played
    await eventually(lambda: len(phone.rtp.received) >= 12)
    assert phone.heard()[-1].payload == bytes([Codec.PCMU.silence]) * 160
    assert_one_continuous_stream(phone.heard())


async def test_connect_stops_the_player_and_bridges(rig: Rig) -> None:
    phone_a, phone_b, port_a, port_b = await call(rig)
    rig.relay(Play("a", ("reconnecting",), "music", 0))
    await eventually(lambda: len(phone_a.rtp.received) >= 5)
    phone_b.talk(port_b, b"\x11" * 160)  # b is not heard by a held a ...
    phone_a.talk(port_a, b"\x12" * 160)  # ... nor a by b
    await eventually(lambda: rig.relay.dropped["unbridged"] == 2)
    assert not phone_b.rtp.received
    rig.relay(Connect("a", "b"))
    assert rig.relay.players == 0
    count = len(phone_a.rtp.received)
    await asyncio.sleep(0.1)
    assert len(phone_a.rtp.received) == count  # the player stopped
    phone_b.talk(port_b, b"\x13" * 160)
    await eventually(lambda: len(phone_a.rtp.received) == count + 1)
    assert phone_a.heard()[-1].payload == b"\x13" * 160


# --- continuity across a re-bridge -------------------------------------------------------------------
async def test_the_survivor_hears_one_stream_across_hold_and_rebridge(rig: Rig) -> None:
    """b fails: a is held (announcement), then connected to c, a new leg — a's phone sees one
    SSRC and sequence numbers +1 throughout, timestamps moving on with time."""
    survivor, failed, port_a, port_b = await call(rig)
    for payload in frames(10):
        failed.talk(port_b, payload)
        await asyncio.sleep(0.02)
    await eventually(lambda: len(survivor.rtp.received) == 10)
    rig.relay(Play("a", ("reconnecting",), "music", 0))
    await eventually(lambda: len(survivor.rtp.received) >= 25)
    rig.relay(CloseSide("b"))
    port_c = rig.open("c")
    new = await rig.phone("c")
    new.sequence, new.timestamp = 65530, 0xFFFFFF00  # wraps around soon after
    rig.relay(Connect("a", "c"))
    held = len(survivor.rtp.received)
    for payload in frames(15, 0xA0):
        new.talk(port_c, payload)
        await asyncio.sleep(0.02)
    await eventually(lambda: len(survivor.rtp.received) == held + 15)
    heard = survivor.heard()
    assert_one_continuous_stream(heard)
    assert heard[10].marker and heard[held].marker  # each new source re-syncs the playout point
    assert [p.payload for p in heard[held:]] == frames(15, 0xA0)
    # the survivor's own voice reaches the new leg, continuous as well
    for payload in frames(5):
        survivor.talk(port_a, payload)
    await eventually(lambda: len(new.rtp.received) == 5)
    assert_one_continuous_stream(new.heard())
    print(f"survivor heard {len(heard)} packets: 10 from b, {held - 10} played, 15 from c")


# --- sides opening and closing -------------------------------------------------------------------
async def test_a_port_that_cannot_be_bound_is_counted_not_fatal(rig: Rig) -> None:
    port = free_pair()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, port + 1))  # the RTCP port is in use
        rig.relay(OpenSide("x", port))
    assert rig.relay.bind_failures == 1
    phone = await rig.phone("x")
    rig.open("y")
    rig.relay(Connect("x", "y"))
    rig.relay(Play("x", ("goodbye",), None, 0))  # nowhere to send: the frames pass
    await asyncio.sleep(0.05)
    assert not phone.rtp.received
    rig.relay(CloseSide("x"))
    assert udp_port_free(port)  # the RTP socket bound before the failure was released


async def test_close_side_releases_its_ports_and_forgets_it(rig: Rig) -> None:
    phone_a, _phone_b, port_a, port_b = await call(rig)
    rig.relay(Play("b", ("goodbye",), None, 0))
    assert len(rig.relay.sides) == 2
    rig.relay(CloseSide("b"))
    rig.relay(CloseSide("b"))  # twice: harmless
    assert rig.relay.players == 0 and list(rig.relay.sides) == ["a"]
    await eventually(
        lambda: udp_port_free(port_b) and udp_port_free(port_b + 1), what="ports released"
    )
    phone_a.talk(port_a, b"\x01" * 160)  # connected to nothing now
    await eventually(lambda: rig.relay.dropped["unbridged"] == 1)
    rig.relay(object())  # not a media command: someone else's
    rig.relay.close()
    assert not rig.relay.sides
    await eventually(lambda: udp_port_free(port_a), what="all ports released")


# --- the server wires it in ------------------------------------------------------------------------
async def test_serve_runs_the_relay_in_relay_mode() -> None:
    from callkeeper.config import Config
    from callkeeper.io.server import start_server
    from support.ports import free_port

    base = free_pair()
    config = Config(
        sip={"listen": [f"udp:{HOST}:{free_port()}"]},
        media={"mode": "relay", "rtp_ports": f"{base}-{base + 10}"},
        store={"url": "memory:"},
    )
    running = await start_server(config, api=False)
    try:
        assert running.relay is not None and running.relay in running.driver.extra_sinks
        running.relay(OpenSide("leg", base))
        assert not udp_port_free(base)
    finally:
        await running.close()
    assert not running.relay.sides and udp_port_free(base)


# --- voicemail: the relay records a side -----------------------------------------------------------
async def test_record_greets_then_records_until_silence() -> None:
    finished: list[tuple[Record, Recording, bool]] = []
    rig = Rig()
    rig.relay.on_recorded = lambda *args: finished.append(args)
    try:
        port = rig.open("a")
        phone = await rig.phone("a")
        rig.relay.add_prompt("hi", tone(0.1, 1000))  # 5 frames of greeting
        command = Record("a", "alice", "sip:bob@x", "call-1", "hi", 0, 10.0, 0.2)
        rig.relay(command)
        phone.talk(port, b"\x00" * 160)  # during the greeting: not part of the message
        await eventually(lambda: len(phone.rtp.received) >= 6)  # the greeting has played
        voice = [bytes(g711.encode(tone(0.02, 440 + i), Codec.PCMU)) for i in range(10)]
        for payload in voice:
            phone.talk(port, payload)
        phone.rtp.send(RtpPacket(101, 1, 1, phone.ssrc, b"\x01\x00\x00\xa0").serialize(), port)
        for _ in range(10):  # 200 ms of silence ends the message
            phone.talk(port, b"\xff" * 160)
        await eventually(lambda: finished, what="the recording to end")
        record, recording, stopped = finished[0]
        assert record is command and stopped
        pcm = recording.pcm()
        assert len(pcm) == 20 * 160  # voice and silence; not the greeting-time packet, not DTMF
        assert np.array_equal(pcm[:1600], g711.decode(b"".join(voice), Codec.PCMU))
        assert rig.relay.players == 0  # stopped by itself: the greeting's player is gone too
        # recording again, then the caller hangs up (the side closes): stopped is False
        rig.relay(command)
        await eventually(lambda: rig.relay.players == 1)
        rig.relay(CloseSide("a"))
        assert len(finished) == 2 and finished[1][2] is False
    finally:
        rig.close()


# --- keys -----------------------------------------------------------------------------------------
async def test_rfc4733_keys_are_reported_once_each_and_still_forwarded(rig: Rig) -> None:
    phone_a, phone_b, port_a, _ = await call(rig)
    keys: list[tuple[str, str]] = []
    rig.relay.on_digit = lambda side, key: keys.append((side, key))
    rig.relay(WatchDigits("a", (101,)))
    phone_a.talk(port_a, frames(1)[0])
    await eventually(lambda: phone_b.heard(), what="audio through")
    for digit in "*86":
        packets = list(
            telephone_event_packets(
                digit,
                ssrc=phone_a.ssrc,
                payload_type=101,
                first_sequence=phone_a.sequence,
                timestamp=phone_a.timestamp,
            )
        )
        for packet in packets:  # the end packets come three times (RFC 4733 §2.5.1.4)
            phone_a.rtp.send(packet.serialize(), port_a)
        phone_a.sequence = (phone_a.sequence + len(packets)) & 0xFFFF
        phone_a.timestamp = (phone_a.timestamp + 3200) & 0xFFFFFFFF
    await eventually(lambda: len(keys) >= 3, what="three keys")
    assert keys == [("a", "*"), ("a", "8"), ("a", "6")]
    await eventually(
        lambda: any(p.payload_type == 101 for p in phone_b.heard()), what="the events forwarded"
    )
