"""The built-in RTP relay on the wire: real baresip phones, the real `callkeeper serve`,
`media.mode = "relay"`.

1. bob calls alice: each phone's SDP names callkeeper's relay (the phones never learn each
   other's media address), each phone's recording holds the other's tone for the call's length,
   and the relay's counters show the RTP went through it.
2. Recovery: alice's baresip is SIGKILLed mid-call; bob is *not* re-INVITEd (the relay holds him:
   announcement, then music, into his unchanged stream), so his baresip keeps recording; alice
   restarts within grace and is connected to bob's relay side again. bob's recording holds the
   announcement (normalised cross-correlation against the shipped prompt), then the restarted
   alice's tone; a raw socket on `lo` (root) times the RTP reaching bob: the announcement
   starts within 1 s of the DOWN, and bob's stream stays one SSRC with consecutive sequence
   numbers through crash, hold and resume.
"""

from __future__ import annotations

import itertools
import random
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callkeeper.io.prompts import load_prompt_samples
from support.audio import Recording, active_duration, dominant_frequency, read_wav
from support.baresip import Baresip, baresip_binary
from support.ports import udp_port_free
from support.server import ServerProcess, wait_until
from test_recovery_baresip import (
    EventStream,
    Sniffer,
    alice_leg,
    assert_tone,
    call_state,
    dump_logs,
    establish,
    the_call,
    wait_registered,
)

pytestmark = pytest.mark.peers

PASSWORDS = {"alice": "alice-pw-7", "bob": "bob-pw-9"}
TONES = {"bob": 1000, "alice": 440, "alice2": 660}
TALK = 3.0
FLOW_TIMER = 2
IN_CALL = 1.0
MISSES = 2
GRACE = 15.0
HOLD = 7.5  # alice stays dead this long after the DOWN: the whole 6.5 s announcement plays
RELAY_PORTS = 40  # 20 sides
CORRELATION_THRESHOLD = 0.5
MAX_GAP = 1.0


def free_rtp_range(size: int = RELAY_PORTS) -> tuple[int, int]:
    """`media.rtp_ports` for one server: `size` ports from an even base in 30000-32000 (below
    the ephemeral range and the phones' port area), all free right now."""
    for _ in range(200):
        base = random.randrange(30000, 32000 - size, 2)
        if all(udp_port_free(port) for port in range(base, base + size)):
            return base, base + size
    raise RuntimeError("no free RTP port range")


@dataclass
class RelayServer(ServerProcess):
    rtp_range: tuple[int, int] = (0, 0)  # media.rtp_ports


def relay_server(tmp_path: Path) -> RelayServer:
    baresip_binary()
    low, high = free_rtp_range()
    users = "".join(f'[[users]]\nname = "{n}"\npassword = "{p}"\n' for n, p in PASSWORDS.items())
    return RelayServer(
        tmp_path / "callkeeper",
        extra_config=(
            f'[media]\nmode = "relay"\nrtp_ports = "{low}-{high}"\n[log]\nlevel = "debug"\n'
            f"[keepalive]\nflow_timer = {FLOW_TIMER}\nin_call_interval = {IN_CALL}\n"
            f"misses = {MISSES}\n"
            f'[recovery]\ngrace = {GRACE}\nring_timeout = 10\nfallback = ["devices"]\n{users}'
        ),
        rtp_range=(low, high),
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RelayServer]:
    with relay_server(tmp_path) as process:
        yield process


def phone(tmp_path: Path, server: ServerProcess, name: str, user: str) -> Baresip:
    return Baresip(
        tmp_path / name, user, server.sip_port, PASSWORDS[user], tone_hz=TONES[name], regint=600
    )


# --- what the phones were told ---------------------------------------------------------------------
_TRACE = re.compile(r"^(?:UDP|TCP) \S+:(\d+) -> \S+:(\d+)\s*$", re.MULTILINE)


def sdp_received(p: Baresip) -> list[tuple[str, int]]:
    """(c= address, m=audio port) of every SDP body the phone received (baresip's -s trace)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", p.log())
    found = []
    marks = list(_TRACE.finditer(text))
    for mark, following in zip(marks, [*marks[1:], None], strict=False):
        if int(mark.group(2)) != p.sip_port:
            continue
        block = text[mark.end() : following.start() if following else len(text)]
        host = re.search(r"^c=IN IP4 (\S+)", block, re.MULTILINE)
        port = re.search(r"^m=audio (\d+)", block, re.MULTILINE)
        if host and port:
            found.append((host.group(1), int(port.group(1))))
    return found


def assert_sdp_names_the_relay(p: Baresip, server: RelayServer, other: Baresip) -> None:
    low, high = server.rtp_range
    bodies = sdp_received(p)
    print(f"{p.name} was told to send RTP to {bodies} (relay range {low}-{high})")
    assert bodies, f"{p.name} received no SDP"
    other_low, other_high = other.rtp_ports
    for host, port in bodies:
        assert host == "127.0.0.1" and low <= port < high and port % 2 == 0, (host, port)
        assert not other_low <= port <= other_high  # never the other phone's own port


def relay_counters(server: RelayServer) -> dict[str, float]:
    return {k: v for k, v in server.metrics().items() if k.startswith("callkeeper_media_")}


# --- 1. a call through the relay -------------------------------------------------------------------
def test_a_call_through_the_relay_carries_both_tones(server: RelayServer, tmp_path: Path) -> None:
    bob = phone(tmp_path, server, "bob", "bob")
    alice = phone(tmp_path, server, "alice", "alice")
    with bob, alice:
        try:
            _talk(server, bob, alice)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{dump_logs(bob, alice, server)}") from None


def _talk(server: RelayServer, bob: Baresip, alice: Baresip) -> None:
    assert bob.ctl is not None and alice.ctl is not None
    checks: dict[str, dict[str, float]] = {}

    def while_talking() -> None:
        checks["during"] = relay_counters(server)

    call_seconds = talk(server, bob, alice, while_talking)
    assert checks["during"]["callkeeper_media_sides"] == 2
    assert_sdp_names_the_relay(bob, server, alice)
    assert_sdp_names_the_relay(alice, server, bob)
    assert_heard_each_other(bob, alice, call_seconds)
    during = checks["during"]

    counters = relay_counters(server)
    print("relay counters:", counters)
    received = counters['callkeeper_media_packets_total{direction="in"}']
    sent = counters['callkeeper_media_packets_total{direction="out"}']
    # 50 packets/s each way for the talk time at least, all of them relayed
    assert during['callkeeper_media_packets_total{direction="in"}'] >= 2 * 50 * TALK * 0.9
    assert received >= 2 * 50 * TALK and sent >= 0.98 * received, counters
    dropped = sum(v for k, v in counters.items() if k.startswith("callkeeper_media_dropped"))
    assert dropped <= 0.02 * received, counters
    assert counters["callkeeper_media_sides"] == 0 and counters["callkeeper_media_players"] == 0
    assert counters["callkeeper_media_bind_failures_total"] == 0


def talk(
    server: ServerProcess, bob: Baresip, alice: Baresip, while_talking: Callable[[], None]
) -> float:
    """bob calls alice, they talk `TALK` s (`while_talking` runs then), bob hangs up; how long
    the call lasted from its establishment."""
    assert bob.ctl is not None and alice.ctl is not None
    wait_registered(server, bob, alice)
    bob.ctl.dial(f"sip:alice@127.0.0.1:{server.sip_port}")
    bob.ctl.wait_event("CALL_ESTABLISHED", 10)
    alice.ctl.wait_event("CALL_ESTABLISHED", 10)
    established = time.monotonic()
    wait_until(lambda: call_state(server) == "active", 5, what="the call active in the API")
    bob.ctl.wait_event("CALL_RTPESTAB", 5)
    alice.ctl.wait_event("CALL_RTPESTAB", 5)
    time.sleep(TALK)
    while_talking()
    bob.ctl.hangup()
    bob.ctl.wait_event("CALL_CLOSED", 5)
    alice.ctl.wait_event("CALL_CLOSED", 5)
    call_seconds = time.monotonic() - established
    wait_until(lambda: server.get_json("/api/v1/calls") == [], 5, what="the call to end")
    return call_seconds


def assert_heard_each_other(bob: Baresip, alice: Baresip, call_seconds: float) -> None:
    """Each phone's recording holds the other's tone for the call's length (within 5 %)."""
    for listener, speaker in ((bob, "alice"), (alice, "bob")):
        (dump,) = listener.wav_files("dec")
        recording = read_wav(dump)
        frequency = dominant_frequency(recording)
        loud = active_duration(recording)
        print(
            f"{listener.name} heard {frequency:.1f} Hz for {loud:.2f} s "
            f"({recording.rate} Hz file of {recording.duration:.2f} s), call {call_seconds:.2f} s"
        )
        assert_tone(frequency, TONES[speaker], f"{listener.name} heard")
        assert abs(loud - call_seconds) <= 0.05 * call_seconds, (loud, call_seconds)


# --- 2. recovery through the relay ---------------------------------------------------------------
def test_the_survivor_hears_the_announcement_then_the_returned_phone(
    server: RelayServer, tmp_path: Path
) -> None:
    bob = phone(tmp_path, server, "bob", "bob")
    alice = phone(tmp_path, server, "alice", "alice")
    events = EventStream(server)
    low, high = bob.rtp_ports
    SsrcSniffer.ssrcs = set()
    sniffer = SsrcSniffer.open({alice.sip_port, bob.sip_port}, set(range(low, high + 1)))
    try:
        with bob, alice:
            try:
                _crash_and_return(server, events, sniffer, bob, alice)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{dump_logs(bob, alice, server)}") from None
    finally:
        events.close()
        if sniffer is not None:
            sniffer.close()


def _crash_and_return(
    server: RelayServer,
    events: EventStream,
    sniffer: Sniffer | None,
    bob: Baresip,
    alice: Baresip,
) -> None:
    during_hold: dict[str, float] = {}
    down_at, resumed = crash_and_return(
        server, events, bob, alice, while_held=lambda: during_hold.update(relay_counters(server))
    )
    assert_bob_was_not_reinvited(bob)
    # the relay held him without touching his phone: a player, announcement then music
    assert during_hold["callkeeper_media_players"] == 1, during_hold
    assert during_hold["callkeeper_media_played_packets_total"] >= 50 * (HOLD - 1)
    assert_announcement_then(bob, TONES["alice2"])
    if sniffer is not None:
        _check_wire(sniffer, bob, down_at, resumed["at"])


def crash_and_return(
    server: ServerProcess,
    events: EventStream,
    bob: Baresip,
    alice: Baresip,
    while_held: Callable[[], None] = lambda: None,
) -> tuple[float, dict[str, Any]]:
    """bob calls alice; alice's baresip is SIGKILLed, stays dead for `HOLD` s after the DOWN
    (`while_held` runs then), restarts with the `alice2` tone and gets the call back; bob
    hangs up after `TALK` s. The DOWN's time and the `call.resumed` event."""
    assert bob.ctl is not None
    (_, alice_endpoint) = wait_registered(server, bob, alice)
    establish(server, bob, alice)
    time.sleep(2.0)

    killed_at = time.time()
    alice.kill()
    wait_until(lambda: call_state(server) == "holding", MISSES * IN_CALL + 5, what="holding")
    held = events.wait("call.held")
    down_at = float(held["at"])
    print(f"kill -9 → DOWN (call held) in {down_at - killed_at:.2f} s")
    time.sleep(HOLD)
    assert call_state(server) == "holding"
    while_held()

    alice.tone_hz = TONES["alice2"]
    alice.start(keep_log=True)
    resumed = events.wait("call.resumed", timeout=10)
    assert resumed["outcome"] == "resumed", resumed
    assert alice_leg(the_call(server))["endpoint"] == alice_endpoint["id"]
    time.sleep(TALK)
    assert not any(e.get("type") == "CALL_CLOSED" for e in bob.ctl.history + bob.ctl.pending)
    bob.ctl.hangup()
    bob.ctl.wait_event("CALL_CLOSED", 5)
    wait_until(lambda: server.get_json("/api/v1/calls") == [], 5, what="the call to end")
    return down_at, resumed


def assert_bob_was_not_reinvited(bob: Baresip) -> None:
    # bob dialled, so any INVITE he received would be a re-INVITE of his call
    received = sip_lines_to(bob)
    assert any(line.startswith("OPTIONS") for line in received), received  # the trace is read
    reinvites = [line for line in received if line.startswith("INVITE")]
    assert reinvites == [], reinvites


def assert_announcement_then(bob: Baresip, returned_hz: float) -> None:
    """bob's one recording: alice's tone, the `reconnecting` announcement (normalised
    cross-correlation against the shipped prompt), then the returned phone's tone."""
    (dump,) = bob.wav_files("dec")  # one recording: the call never stopped for bob
    recording = read_wav(dump)
    assert recording.rate == 8000, recording.rate
    samples = np.frombuffer(recording.samples.tobytes(), dtype=np.int16).astype(np.float64)
    prompt = load_prompt_samples("reconnecting").astype(np.float64)
    score, offset = best_correlation(samples, prompt)
    print(
        f"bob's recording: {recording.duration:.2f} s; announcement found at "
        f"{offset / 8000:.2f} s, normalised cross-correlation {score:.4f}"
    )
    assert score >= CORRELATION_THRESHOLD, score
    # the control: the prompt is not found in what bob heard before the crash (alice's tone)
    control, _ = best_correlation(samples[: max(0, offset - 1600)], prompt[:8000])
    print(f"control: the prompt's first second against the pre-crash audio: {control:.3f}")
    assert control < 0.3, control
    before = Recording(8000, recording.samples[: max(0, offset - 1600)])
    assert_tone(dominant_frequency(before), TONES["alice"], "bob before the crash")
    after_start = offset + len(prompt) + 8000  # past the announcement and a second of music
    after = Recording(8000, recording.samples[after_start:])
    assert_tone(dominant_frequency(after), returned_hz, "bob after the resume")
    loud_after = active_duration(Recording(8000, recording.samples[offset + len(prompt) :]))
    print(f"bob heard {loud_after:.2f} s of sound after the announcement (music, then alice)")


def best_correlation(recording: np.ndarray, template: np.ndarray) -> tuple[float, int]:
    """The highest normalised cross-correlation of `template` against every window of
    `recording` (FFT), and the window's start."""
    n, m = len(recording), len(template)
    if n < m:
        recording = np.concatenate([recording, np.zeros(m - n)])
        n = m
    size = 1 << (n + m).bit_length()
    spectrum = np.fft.rfft(recording, size) * np.conj(np.fft.rfft(template, size))
    products = np.fft.irfft(spectrum, size)[: n - m + 1]
    energy = np.concatenate([[0.0], np.cumsum(recording * recording)])
    window_norms = np.sqrt(np.maximum(energy[m:] - energy[:-m], 1e-9))
    scores = products / (window_norms * np.linalg.norm(template))
    best = int(np.argmax(scores))
    return float(scores[best]), best


def sip_lines_to(p: Baresip) -> list[str]:
    """The first line of every SIP message `p` received (from its -s trace)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", p.log())
    lines = []
    for mark in _TRACE.finditer(text):
        if int(mark.group(2)) == p.sip_port:
            rest = text[mark.end() :].lstrip("\n")
            lines.append(rest.split("\n", 1)[0].strip())
    return lines


def _check_wire(sniffer: Sniffer, bob: Baresip, down_at: float, resumed_at: float) -> None:
    to_bob = sorted((p for p in sniffer.rtp if p.payload_type == 0), key=lambda p: p.at)
    assert to_bob, "no RTP to bob captured"
    after_down = [p for p in to_bob if p.at >= down_at]
    gap = after_down[0].at - down_at
    print(f"DOWN → first announcement packet at bob: {1000 * gap:.1f} ms")
    assert gap <= MAX_GAP, gap
    # longest pause in what bob received from the DOWN to the end of the call
    pauses = [b.at - a.at for a, b in itertools.pairwise(after_down)]
    print(f"longest pause in bob's RTP after the DOWN: {1000 * max(pauses):.1f} ms")
    assert max(pauses) <= MAX_GAP, max(pauses)
    # one stream: bob's phone never saw the source change (same relay port, sequence +1)
    sources = {p.src for p in to_bob}
    assert len(sources) == 1, sources
    assert isinstance(sniffer, SsrcSniffer)
    assert len(sniffer.ssrcs) == 1, sniffer.ssrcs
    steps = {(b.seq - a.seq) & 0xFFFF for a, b in itertools.pairwise(to_bob)}
    print(f"RTP to bob: {len(to_bob)} packets, sequence steps {sorted(steps)}")
    assert steps <= {1, 2, 3}, steps  # a reordered or lost packet on a loaded machine at most
    resumed_packets = [p for p in to_bob if p.at > resumed_at]
    assert len(resumed_packets) >= 50 * (TALK - 0.5)


class SsrcSniffer(Sniffer):
    """The recovery test's sniffer, also noting the SSRC of each RTP (not RTCP) packet to
    `rtp_ports`."""

    ssrcs: set[int]

    def _parse(self, data: bytes, ancillary: list[tuple[int, int, bytes]]) -> None:
        if len(data) >= 40 and data[9] == socket.IPPROTO_UDP:
            header = (data[0] & 0x0F) * 4
            dst = struct.unpack("!H", data[header + 2 : header + 4])[0]
            rtp = data[header + 8 :]
            rtcp = len(rtp) > 1 and 192 <= rtp[1] <= 223  # RFC 5761 §4
            if dst in self.rtp_ports and len(rtp) > 12 and rtp[0] >> 6 == 2 and not rtcp:
                self.ssrcs.add(struct.unpack("!I", rtp[8:12])[0])
        super()._parse(data, ancillary)
