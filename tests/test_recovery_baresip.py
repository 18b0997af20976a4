"""Issue 6 on the wire: calls between real baresip phones survive the loss of one phone.

bob (the caller) calls alice through the real `callkeeper serve`; media mode "off", so the SDP
passes through and RTP flows phone to phone. Then alice's side moves:

1. alice's baresip is SIGKILLed mid-call (a crash: no BYE, no un-REGISTER): bob is held, never
   BYEd; alice's baresip starts again from the same config dir (same +sip.instance), re-REGISTERs,
   answers 481 to the old dialog's re-INVITE, auto-answers the new INVITE, and the call is
   bridged again (outcome `resumed`, a new dialog); both hear each other again.
2. alice dials the feature code `*86` on her second phone: the call moves there at once.
3. `POST /api/v1/calls/{id}/recover` {"target": "alice"}: her second phone rings, takes the call.

Each side sends its own tone; the restarted/second alice phone a third one, so what bob hears
after the move can only have come from the new leg. A raw socket on `lo` (root) timestamps the
SIP packets, for the REGISTER → new INVITE delay, and captures the RTP that reaches bob.

baresip 1.0 facts these tests live with:
- it has no auto-answer by `Call-Info: ...;answer-after=0` (nothing in the binary knows the
  header); the restarted phone auto-answers because its account says `answermode=auto`, and it
  can answer before ctrl_tcp accepts us, so its call is checked with `listcalls`, not events.
- after any re-INVITE that holds it (a=sendonly offered to it, whoever sends it: a baresip
  `hold`/`resume` relayed by callkeeper does the same) baresip re-creates its player and neither
  records (sndfile) nor plays what it receives any more, though RTP keeps arriving. Held and
  un-held, bob's recording ends at the hold; so in test 1 what bob got after the resume is read
  off the wire (RTP from the restarted alice to bob's ports, decoded from PCMU). The moves of
  tests 2 and 3 do not hold bob, and there bob's own recording is checked.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import urllib.request
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.audio import Recording, active_duration, dominant_frequency, read_wav
from support.baresip import Baresip, baresip_binary
from support.server import ServerProcess, wait_until
from support.sse import EventStream

pytestmark = pytest.mark.peers

PASSWORDS = {"alice": "alice-pw-7", "bob": "bob-pw-9"}
TONES = {"bob": 1000, "alice": 440, "alice2": 660}  # alice2: the restarted or second phone
TALK = 2.0  # seconds of audio before and after the move
FLOW_TIMER = 2  # keep-alive interval asked of the phones (Flow-Timer), in seconds
IN_CALL = 1.0  # in a call, probe every second
MISSES = 2
GRACE = 15.0
# DOWN once nothing is heard for MISSES × IN_CALL (+ a small grace); ICMP errors on the probes
# make it sooner. The bound allows for a loaded 2-core machine.
DETECTION_BOUND = MISSES * IN_CALL + 2.0
REGISTER_TO_INVITE_BOUND = 0.100
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python 3.11 lacks the name


# --- the server and its event stream ---------------------------------------------------------------
@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    baresip_binary()
    users = "".join(f'[[users]]\nname = "{n}"\npassword = "{p}"\n' for n, p in PASSWORDS.items())
    process = ServerProcess(
        tmp_path / "callkeeper",
        extra_config=(
            f'[media]\nmode = "off"\n[log]\nlevel = "debug"\n'
            f"[keepalive]\nflow_timer = {FLOW_TIMER}\nin_call_interval = {IN_CALL}\n"
            f"misses = {MISSES}\n"
            f'[recovery]\ngrace = {GRACE}\nring_timeout = 10\nfallback = ["devices"]\n{users}'
        ),
    )
    with process:
        yield process


# --- SIP packets on lo, with kernel timestamps -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Packet:
    at: float  # kernel receive time, unix seconds
    src: int  # UDP source port
    dst: int
    first_line: str  # SIP; "" for RTP
    call_id: str
    cseq: str


@dataclass(frozen=True, slots=True)
class RtpPacket:
    at: float
    src: int
    dst: int
    payload_type: int
    seq: int
    payload: bytes


@dataclass
class Sniffer:
    """UDP on 127.0.0.1: SIP to or from `ports`, RTP to `rtp_ports` (AF_PACKET needs root;
    `open` returns None when it is not allowed)."""

    ports: set[int]
    rtp_ports: set[int]
    packets: list[Packet] = field(default_factory=list)
    rtp: list[RtpPacket] = field(default_factory=list)

    @classmethod
    def open(cls, ports: set[int], rtp_ports: set[int]) -> Sniffer | None:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        except (PermissionError, AttributeError):
            return None
        sniffer = cls(ports, rtp_ports)
        sock.bind(("lo", 0x0800))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.settimeout(0.2)
        sniffer._sock = sock
        sniffer._stop = threading.Event()
        sniffer._thread = threading.Thread(target=sniffer._run, daemon=True)
        sniffer._thread.start()
        return sniffer

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, address = self._sock.recvmsg(65535, 64)
            except TimeoutError:
                continue
            if address[2] == socket.PACKET_OUTGOING:  # lo shows each packet twice
                continue
            self._parse(data, ancillary)

    def _parse(self, data: bytes, ancillary: list[tuple[int, int, bytes]]) -> None:
        if len(data) < 28 or data[9] != socket.IPPROTO_UDP:
            return
        header = (data[0] & 0x0F) * 4
        src, dst = struct.unpack("!HH", data[header : header + 4])
        payload = data[header + 8 :]
        at = time.time()
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                at = seconds + nanoseconds / 1e9
        if dst in self.rtp_ports and len(payload) > 12 and payload[0] >> 6 == 2:
            seq = struct.unpack("!H", payload[2:4])[0]
            self.rtp.append(RtpPacket(at, src, dst, payload[1] & 0x7F, seq, payload[12:]))
            return
        if src not in self.ports and dst not in self.ports:
            return
        if not payload[:12].strip() or payload[:1] in (b"\x00", b"\x01"):  # keep-alive, STUN
            return
        text = payload.decode("utf-8", "replace")
        headers = {}
        for line in text.split("\r\n")[1:]:
            if not line:
                break
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        self.packets.append(
            Packet(
                at,
                src,
                dst,
                text.split("\r\n", 1)[0],
                headers.get("call-id", headers.get("i", "")),
                headers.get("cseq", ""),
            )
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def find(self, match: Callable[[Packet], bool]) -> list[Packet]:
        return [p for p in list(self.packets) if match(p)]


# --- phones -----------------------------------------------------------------------------------------
def phone(
    tmp_path: Path, server: ServerProcess, name: str, user: str, answermode: str = "auto"
) -> Baresip:
    return Baresip(
        tmp_path / name,
        user,
        server.sip_port,
        PASSWORDS[user],
        tone_hz=TONES[name],
        answermode=answermode,
        regint=600,
    )


def endpoint_of(server: ServerProcess, p: Baresip) -> dict[str, Any] | None:
    for e in server.get_json("/api/v1/endpoints"):
        if e["user"] == p.name and f":{p.sip_port}" in e["contact"] and e["state"] == "alive":
            return e  # type: ignore[no-any-return]
    return None


def wait_registered(server: ServerProcess, *phones: Baresip) -> list[dict[str, Any]]:
    found = []
    for p in phones:
        found.append(
            wait_until(
                lambda p=p: not _reg_failed(p) and endpoint_of(server, p),
                10,
                what=f"{p.name} on port {p.sip_port} registered",
            )
        )
    return found


def _reg_failed(p: Baresip) -> bool:
    errors = p.registration_errors()
    assert not errors, f"{p.name} could not register: {errors}"
    return False


def the_call(server: ServerProcess) -> dict[str, Any]:
    calls = server.get_json("/api/v1/calls")
    assert len(calls) == 1, calls
    return calls[0]  # type: ignore[no-any-return]


def call_state(server: ServerProcess) -> str:
    return str(the_call(server)["state"])


def alice_leg(call: dict[str, Any]) -> dict[str, Any]:
    (leg,) = [leg for leg in call["legs"] if leg["user"] == "alice"]
    return leg  # type: ignore[no-any-return]


def establish(server: ServerProcess, bob: Baresip, alice: Baresip) -> str:
    """bob calls alice; both are established and hear each other. Returns the Call-ID of
    alice's leg (as her baresip reports it)."""
    assert bob.ctl is not None and alice.ctl is not None
    bob.ctl.dial(f"sip:alice@127.0.0.1:{server.sip_port}")
    bob.ctl.wait_event("CALL_ESTABLISHED", 10)
    established = alice.ctl.wait_event("CALL_ESTABLISHED", 10)
    wait_until(lambda: call_state(server) == "active", 5, what="the call active in the API")
    bob.ctl.wait_event("CALL_RTPESTAB", 5)
    alice.ctl.wait_event("CALL_RTPESTAB", 5)
    return str(established["id"])


def recover_api(server: ServerProcess, call_id: str, target: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        server.url(f"/api/v1/calls/{call_id}/recover"),
        data=json.dumps({"target": target}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


# --- audio ------------------------------------------------------------------------------------------
def tail(recording: Recording, seconds: float) -> Recording:
    return Recording(recording.rate, recording.samples[-int(seconds * recording.rate) :])


def _ulaw(byte: int) -> int:
    """One G.711 mu-law byte as a 16-bit sample (ITU-T G.711)."""
    byte = ~byte & 0xFF
    magnitude = (((byte & 0x0F) << 3) + 0x84) << ((byte & 0x70) >> 4)
    return (0x84 - magnitude) if byte & 0x80 else (magnitude - 0x84)


ULAW = [_ulaw(b) for b in range(256)]


def rtp_recording(packets: list[RtpPacket]) -> Recording:
    """The PCMU (payload type 0) packets' audio, in sequence order, as an 8 kHz recording."""
    pcmu = sorted((p for p in packets if p.payload_type == 0), key=lambda p: (p.src, p.seq))
    assert pcmu, f"no PCMU packets among {len(packets)}"
    return Recording(8000, array("h", (ULAW[b] for p in pcmu for b in p.payload)))


def heard(listener: Baresip, seconds: float | None = None) -> tuple[float, float]:
    """(dominant frequency, seconds of sound) of what `listener` received: its last call's
    decoded WAV, or only that file's last `seconds`."""
    dumps = listener.wav_files("dec")
    assert dumps, f"{listener.name} recorded nothing: {listener.log()[-2000:]}"
    recording = read_wav(dumps[-1])
    if seconds is not None:
        recording = tail(recording, seconds)
    return dominant_frequency(recording), active_duration(recording)


def assert_tone(frequency: float, expected: int, who: str) -> None:
    print(f"{who}: {frequency:.1f} Hz (expected {expected})")
    assert abs(frequency - expected) <= 0.05 * expected, (who, frequency, expected)


def dump_logs(*items: Baresip | ServerProcess) -> str:
    parts = []
    for item in items:
        label = item.name if isinstance(item, Baresip) else "callkeeper"
        parts.append(f"--- {label} ---\n{item.log()[-6000:]}")
    return "\n".join(parts)


# --- 1. a crashed phone restarts within grace ----------------------------------------------------
def test_a_crashed_phone_restarted_within_grace_gets_its_call_back(
    server: ServerProcess, tmp_path: Path
) -> None:
    bob = phone(tmp_path, server, "bob", "bob")
    alice = phone(tmp_path, server, "alice", "alice")
    events = EventStream(server)
    low, high = bob.rtp_ports
    sniffer = Sniffer.open({alice.sip_port, bob.sip_port}, set(range(low, high + 1)))
    try:
        with bob, alice:
            try:
                _crash_and_restart(server, events, sniffer, bob, alice)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{dump_logs(bob, alice, server)}") from None
    finally:
        events.close()
        if sniffer is not None:
            sniffer.close()


def _crash_and_restart(
    server: ServerProcess,
    events: EventStream,
    sniffer: Sniffer | None,
    bob: Baresip,
    alice: Baresip,
) -> None:
    assert bob.ctl is not None
    (_, alice_endpoint) = wait_registered(server, bob, alice)
    old_call_id = establish(server, bob, alice)
    assert alice_leg(the_call(server))["endpoint"] == alice_endpoint["id"]
    time.sleep(TALK)  # audio flows both ways

    killed, killed_at = time.monotonic(), time.time()
    alice.kill()
    wait_until(lambda: call_state(server) == "holding", DETECTION_BOUND + 3, what="holding")
    detection = time.monotonic() - killed
    held = events.wait("call.held")
    print(f"kill -9 → holding in {detection:.2f} s (reason {held['reason']})")
    assert detection <= DETECTION_BOUND, detection
    assert held["endpoint"] == alice_endpoint["id"]

    # the survivor keeps its call: no BYE, the call still listed by bob's baresip
    assert not any(e.get("type") == "CALL_CLOSED" for e in bob.ctl.history + bob.ctl.pending)
    print("bob's calls while holding:", bob.ctl.list_calls().strip())

    # the same phone starts again from its config dir: same +sip.instance, new tone
    alice.tone_hz = TONES["alice2"]
    restarted = time.monotonic()
    alice.start(keep_log=True)
    assert alice.ctl is not None
    resumed = events.wait("call.resumed", timeout=10)
    back = time.monotonic() - restarted
    resuming = events.wait("call.resuming")
    transferring = events.wait("call.transferring", lambda d: d["step"] == "resume")
    # It may have answered before ctrl_tcp let us in (its events are then lost): ask it.
    wait_until(lambda: "ESTABLISHED" in _calls(alice), 5, what="restarted alice in the call")
    print(
        f"restart → resumed in {back:.2f} s; resume_seconds {resumed['resume_seconds']:.3f}, "
        f"recovery_seconds {resumed['recovery_seconds']:.3f}, held {resuming['held_seconds']:.2f}"
    )
    assert resumed["outcome"] == "resumed" and resumed["new_dialog"] is True, resumed
    assert resumed["endpoint"] == alice_endpoint["id"], (resumed, alice_endpoint)
    # One resume: its re-registration (a reboot: new Call-ID) does not start it over.
    assert len(events.all("call.resuming")) == 1, events.all("call.resuming")
    sse_delay = transferring["at"] - resuming["at"]
    print(f"SSE call.resuming → call.transferring(resume): {1000 * sse_delay:.1f} ms")

    call = the_call(server)
    assert call["state"] == "active", call
    assert alice_leg(call)["endpoint"] == alice_endpoint["id"], call
    metrics = server.metrics()
    assert metrics.get('callkeeper_recoveries_total{outcome="resumed"}') == 1, metrics

    if sniffer is not None:
        delay = _register_to_invite(sniffer, alice, server, old_call_id, killed_at)
        assert delay <= REGISTER_TO_INVITE_BOUND, delay
    assert sse_delay <= REGISTER_TO_INVITE_BOUND, sse_delay

    time.sleep(TALK)
    assert not any(e.get("type") == "CALL_CLOSED" for e in bob.ctl.history + bob.ctl.pending)
    if sniffer is not None:  # bob was re-INVITEd (hold, un-hold), never sent BYE
        to_bob = [p.first_line.split()[0] for p in sniffer.packets if p.dst == bob.sip_port]
        assert "BYE" not in to_bob and to_bob.count("INVITE") >= 2, to_bob
    bob.ctl.hangup()
    bob.ctl.wait_event("CALL_CLOSED", 5)
    alice.ctl.wait_event("CALL_CLOSED", 5)
    wait_until(lambda: server.get_json("/api/v1/calls") == [], 5, what="the call to end")

    # what each phone received: the restarted alice's recording is bob's tone ...
    frequency, _ = heard(alice)
    assert_tone(frequency, TONES["bob"], "restarted alice heard")
    # ... bob's recording holds alice's tone from before the crash, but baresip 1.0 records
    # (and plays) nothing after any re-INVITE that holds it, even one it sends itself (see the
    # module notes), so what bob got after the resume is read off the wire: the RTP arriving at
    # bob's ports from the restarted alice, decoded.
    frequency, _ = heard(bob)
    assert_tone(frequency, TONES["alice"], "bob's recording (before the crash)")
    if sniffer is not None:
        low, high = alice.rtp_ports
        after = [p for p in sniffer.rtp if p.at > resumed["at"] and low <= p.src <= high]
        recording = rtp_recording(after)
        print(f"RTP restarted alice → bob after the resume: {recording.duration:.2f} s")
        assert recording.duration >= TALK - 0.5, recording.duration
        assert_tone(dominant_frequency(recording), TONES["alice2"], "bob got after the resume")


def _calls(p: Baresip) -> str:
    assert p.ctl is not None
    return p.ctl.list_calls()


def _register_to_invite(
    sniffer: Sniffer, alice: Baresip, server: ServerProcess, old_call_id: str, since: float
) -> float:
    port, ours = alice.sip_port, server.sip_port
    registers = sniffer.find(
        lambda p: p.src == port and p.first_line.startswith("REGISTER") and p.at > since
    )
    invites = sniffer.find(
        lambda p: p.dst == port and p.first_line.startswith("INVITE") and p.src == ours
    )
    new_invite = next(p for p in invites if p.call_id != old_call_id)
    before = [r for r in registers if r.at < new_invite.at]
    assert before, "no REGISTER before the new INVITE"
    delay = new_invite.at - before[-1].at
    print(
        f"REGISTER → new INVITE: {1000 * delay:.1f} ms (first REGISTER of the restart: "
        f"{1000 * (new_invite.at - before[0].at):.1f} ms)"
    )
    return delay


# --- 2 and 3. alice moves her call to her second phone --------------------------------------------
@pytest.mark.parametrize("how", ["feature-code", "api"])
def test_alice_moves_her_call_to_her_second_phone(
    server: ServerProcess, tmp_path: Path, how: str
) -> None:
    bob = phone(tmp_path, server, "bob", "bob")
    a1 = phone(tmp_path, server, "alice", "alice")
    a2 = phone(tmp_path, server, "alice2", "alice", answermode="manual")
    events = EventStream(server)
    try:
        with bob, a1:
            try:
                move_call(server, events, bob, a1, a2, how)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{dump_logs(bob, a1, a2, server)}") from None
            finally:
                if a2.process is not None:
                    a2.stop()
    finally:
        events.close()


def move_call(
    server: ServerProcess, events: EventStream, bob: Baresip, a1: Baresip, a2: Baresip, how: str
) -> None:
    assert bob.ctl is not None and a1.ctl is not None
    _, a1_endpoint = wait_registered(server, bob, a1)
    establish(server, bob, a1)
    call_id = the_call(server)["id"]
    # alice's second phone registers once the call is up (so it did not ring for it)
    a2.start()
    assert a2.ctl is not None
    (a2_endpoint,) = wait_registered(server, a2)
    time.sleep(TALK)

    moved = time.monotonic()
    if how == "feature-code":
        a2.ctl.dial(f"sip:*86@127.0.0.1:{server.sip_port}")
    else:
        status, body = recover_api(server, call_id, "alice")
        assert status == 202, body
        incoming = a2.ctl.wait_event("CALL_INCOMING", 5)
        print("a2 rings:", incoming.get("peeruri"))
        a2.ctl.accept()
    a2.ctl.wait_event("CALL_ESTABLISHED", 5)
    a1.ctl.wait_event("CALL_CLOSED", 5)  # the old phone is sent BYE
    transferred = events.wait("call.transferred", timeout=5)
    print(
        f"{how}: moved in {time.monotonic() - moved:.2f} s; "
        f"recovery_seconds {transferred['recovery_seconds']:.3f}"
    )
    assert transferred["endpoint"] == a2_endpoint["id"], (transferred, a2_endpoint)
    call = the_call(server)
    assert call["id"] == call_id and call["state"] == "active", call
    assert alice_leg(call)["endpoint"] == a2_endpoint["id"] != a1_endpoint["id"], call

    a2.ctl.wait_event("CALL_RTPESTAB", 5)
    time.sleep(TALK)
    assert not any(e.get("type") == "CALL_CLOSED" for e in bob.ctl.history + bob.ctl.pending)
    assert "ESTABLISHED" in _calls(bob)
    bob.ctl.hangup()
    bob.ctl.wait_event("CALL_CLOSED", 5)
    a2.ctl.wait_event("CALL_CLOSED", 5)
    wait_until(lambda: server.get_json("/api/v1/calls") == [], 5, what="the call to end")

    frequency, _ = heard(a2)
    assert_tone(frequency, TONES["bob"], "alice's second phone heard")
    frequency, _ = heard(bob, seconds=TALK - 0.5)
    assert_tone(frequency, TONES["alice2"], "bob heard after the move")
