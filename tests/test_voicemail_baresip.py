"""Issue 7's built-in voicemail on the wire: real baresip phones, the real `callkeeper serve`,
`media.mode = "relay"` and `"rtpengine"`, `recovery.fallback = ["voicemail"]`, no `voicemail_uri`.

bob (baresip, a 1000 Hz tone) calls alice (baresip "A1"); alice has `voicemail = true` and a
second device, a bare UDP SIP agent registered as alice with digest, which declines calls
(486) and answers every other request 200. A1 is SIGKILLed mid-call; after the short grace the
chain's only step is the built-in voicemail: the relay plays the greeting into bob's unchanged
stream, then records what bob sends.

1. bob stays `STAY` seconds after the greeting, then hangs up: the message is listed by
   `GET /api/v1/voicemail/alice` (caller bob, the call's id, `seconds` ≈ the time bob stayed
   after the greeting), its WAV (8 kHz, 16-bit, mono) holds bob's 1000 Hz tone for the
   message's length, bob heard the greeting, and alice's second device gets an unsolicited
   `NOTIFY` message-summary (RFC 3842) with `Messages-Waiting: yes` and `Voice-Message: 1/0`.
2. The silence stop: bob sends his tone `TONE_THEN_MUTE` seconds after the greeting, then mutes
   (baresip 1.0's `mute` keeps sending RTP, of zero samples): after
   `VOICEMAIL_SILENCE_SECONDS` of silence the relay ends the message and callkeeper BYEs bob
   by itself; the message holds the tone, then the silence.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callkeeper.calls.recovery_fallback import VOICEMAIL_SILENCE_SECONDS
from callkeeper.io.prompts import load_prompt_samples
from support.audio import active_duration, active_span, dominant_frequency, read_wav
from support.baresip import Baresip, baresip_binary
from support.rtpengine import Rtpengine
from support.server import ServerProcess, wait_until
from support.ua import Message, UdpAgent, digest_answer
from test_recovery_baresip import EventStream, dump_logs, establish, the_call, wait_registered
from test_relay_baresip import best_correlation, free_rtp_range

pytestmark = pytest.mark.peers

PASSWORDS = {"alice": "alice-pw-7", "bob": "bob-pw-9"}
TONES = {"bob": 1000, "alice": 440}
FLOW_TIMER = 2
IN_CALL = 1.0
MISSES = 2
GRACE = 2.0
TALK = 1.0  # seconds of the call before A1 dies
STAY = 3.0  # test 1: bob stays this long after the greeting
TONE_THEN_MUTE = 1.5  # test 2: bob's tone this long after the greeting, then silence
GREETING = "voicemail_greeting"
# The message's length against the time bob spent after the greeting, as the test measures it
# (the SSE `at` of the voicemail step + the greeting's length → bob's hang-up): the relay
# starts recording with bob's first packet after the greeting's last 20 ms frame and stops at
# the BYE; a few packet times either way, more on a loaded 2-core machine.
SECONDS_TOLERANCE = 0.3
TONE_TOLERANCE_HZ = 10.0
CORRELATION_THRESHOLD = 0.5


@dataclass
class VoicemailServer(ServerProcess):
    voicemail_dir: Path = Path()


@pytest.fixture(params=["relay", "rtpengine"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[VoicemailServer]:
    """With rtpengine carrying the call, the relay still records: rtpengine forwards bob's
    media to a relay side and the greeting back."""
    baresip_binary()
    with contextlib.ExitStack() as stack:
        media = f'mode = "{request.param}"\n'
        if request.param == "rtpengine":
            rtpengine = stack.enter_context(Rtpengine(tmp_path / "rtpengine"))
            media += f'rtpengine = "{rtpengine.address}"\n'
        yield stack.enter_context(_server(tmp_path, media))


def _server(tmp_path: Path, media: str) -> VoicemailServer:
    low, high = free_rtp_range()
    voicemail_dir = tmp_path / "voicemail"
    users = (
        f'[[users]]\nname = "alice"\npassword = "{PASSWORDS["alice"]}"\nvoicemail = true\n'
        f'[[users]]\nname = "bob"\npassword = "{PASSWORDS["bob"]}"\n'
    )
    process = VoicemailServer(
        tmp_path / "callkeeper",
        extra_config=(
            f'[media]\n{media}rtp_ports = "{low}-{high}"\n'
            f'voicemail_dir = "{voicemail_dir}"\n[log]\nlevel = "debug"\n'
            f"[keepalive]\nflow_timer = {FLOW_TIMER}\nin_call_interval = {IN_CALL}\n"
            f"misses = {MISSES}\n"
            f'[recovery]\ngrace = {GRACE}\nring_timeout = 10\nfallback = ["voicemail"]\n{users}'
        ),
        voicemail_dir=voicemail_dir,
    )
    return process


def phone(tmp_path: Path, server: ServerProcess, name: str) -> Baresip:
    return Baresip(
        tmp_path / name, name, server.sip_port, PASSWORDS[name], tone_hz=TONES[name], regint=600
    )


# --- alice's second device: registers, declines calls, keeps every request it gets -----------
@dataclass
class Received:
    at: float  # unix time
    message: Message


@dataclass
class SecondDevice:
    """A UdpAgent registered as alice (digest), then served by a thread that answers each
    request: INVITE 486 (busy: the call goes to A1), ACK nothing, anything else 200."""

    agent: UdpAgent
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def register(self, server: ServerProcess, user: str, password: str) -> None:
        uri = f"sip:127.0.0.1:{server.sip_port}"
        to = f"<sip:{user}@127.0.0.1:{server.sip_port}>"
        call_id = f"mwi-reg-{time.monotonic_ns()}@127.0.0.1"
        data, *_ = self.agent.request(
            "REGISTER", uri, to=to, call_id=call_id, from_tag="r1", extra="Expires: 300\r\n"
        )
        self.agent.send(data)
        challenge = self.agent.final_response(call_id, "REGISTER")
        assert challenge is not None and challenge.status == 401, challenge
        auth = digest_answer(
            challenge.header("WWW-Authenticate") or "", "REGISTER", uri, user, password
        )
        data, *_ = self.agent.request(
            "REGISTER",
            uri,
            to=to,
            call_id=call_id,
            from_tag="r1",
            cseq=2,
            extra=f"Authorization: {auth}\r\nExpires: 300\r\n",
        )
        self.agent.send(data)
        response = self.agent.final_response(call_id, "REGISTER")
        assert response is not None and response.status == 200, response
        self._thread.start()

    def _serve(self) -> None:
        sock = self.agent.sock
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, source = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            message = Message(data)
            if message.method is None:
                continue  # a response (none expected once registered)
            with self._lock:
                self.received.append(Received(time.time(), message))
            if message.method == "ACK":
                continue
            status, reason = (486, "Busy Here") if message.method == "INVITE" else (200, "OK")
            sock.sendto(_response(message, status, reason), source)

    def requests(self, method: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.message.method == method]

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.agent.close()


def _response(request: Message, status: int, reason: str) -> bytes:
    to = request.header("To") or ""
    if ";tag=" not in to:
        to += ";tag=mwi-device"
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {via}" for via in request.headers("Via")]
    lines += [
        f"From: {request.header('From')}",
        f"To: {to}",
        f"Call-ID: {request.header('Call-ID')}",
        f"CSeq: {request.header('CSeq')}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def second_device(server: ServerProcess) -> Iterator[SecondDevice]:
    device = SecondDevice(UdpAgent(server.sip_port, user="alice"))
    try:
        device.register(server, "alice", PASSWORDS["alice"])
        yield device
    finally:
        device.close()


# --- the scenario up to the greeting -----------------------------------------------------------------
def greeting_seconds() -> float:
    return len(load_prompt_samples(GREETING)) / 8000


def crash_into_voicemail(
    server: ServerProcess, events: EventStream, bob: Baresip, alice: Baresip
) -> tuple[str, float]:
    """bob calls alice, A1 dies, the chain reaches the built-in voicemail. Returns the call's
    id and the unix time the greeting ends (the voicemail step's SSE `at` + its length)."""
    wait_registered(server, bob, alice)
    establish(server, bob, alice)
    call_id = str(the_call(server)["id"])
    time.sleep(TALK)  # the call's own time before the crash, not a synchronisation
    killed_at = time.time()
    alice.kill()
    held = events.wait("call.held", timeout=MISSES * IN_CALL + 5)
    transferring = events.wait(
        "call.transferring", lambda e: e.get("step") == "voicemail", timeout=GRACE + 5
    )
    print(
        f"kill -9 → held in {held['at'] - killed_at:.2f} s; held → voicemail step in "
        f"{transferring['at'] - held['at']:.2f} s (grace {GRACE} s)"
    )
    assert held["call"] == call_id and transferring["call"] == call_id
    assert transferring["targets"] == ["voicemail"], transferring
    transferred = events.wait("call.transferred", timeout=5)
    assert transferred["outcome"] == "voicemail", transferred
    assert transferred["call"] == call_id and transferred["endpoint"] == "voicemail"
    assert the_call(server)["state"] == "active"
    # the structured log has the same two events
    for pattern in (
        rf"call\.transferring .*call={call_id} step=voicemail targets=\['voicemail'\]",
        rf"call\.transferred .*call={call_id} endpoint=voicemail .*outcome=voicemail",
    ):
        wait_until(lambda p=pattern: re.search(p, server.log()), 5, what=f"log: {pattern}")
    return call_id, transferring["at"] + greeting_seconds()


def sleep_until(when: float) -> None:
    """The scenario's own timing (how long bob talks), not a synchronisation."""
    time.sleep(max(0.0, when - time.time()))


def the_message(server: ServerProcess) -> dict[str, Any]:
    messages = wait_until(
        lambda: server.get_json("/api/v1/voicemail/alice"), 5, what="alice's voicemail"
    )
    assert len(messages) == 1, messages
    return messages[0]  # type: ignore[no-any-return]


def fetch_wav(server: ServerProcess, message: dict[str, Any], into: Path) -> Path:
    assert message["wav"] == f"/api/v1/voicemail/alice/{message['id']}.wav", message
    with urllib.request.urlopen(server.url(message["wav"]), timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "audio/wav", response.headers
        into.write_bytes(response.read())
    with wave.open(str(into), "rb") as wav:
        shape = (wav.getframerate(), wav.getsampwidth(), wav.getnchannels())
        frames = wav.getnframes()
    assert shape == (8000, 2, 1), shape  # 8 kHz, 16-bit, mono
    assert abs(frames / 8000 - message["seconds"]) <= 0.001, (frames, message)
    return into


def assert_bob_heard_the_greeting(bob: Baresip) -> None:
    (dump,) = bob.wav_files("dec")  # one recording: bob's call never stopped
    recording = read_wav(dump)
    samples = np.frombuffer(recording.samples.tobytes(), dtype=np.int16).astype(np.float64)
    prompt = load_prompt_samples(GREETING).astype(np.float64)
    score, offset = best_correlation(samples, prompt)
    print(f"bob heard the greeting at {offset / 8000:.2f} s (correlation {score:.3f})")
    assert score >= CORRELATION_THRESHOLD, score


# --- 1. a message, then MWI ------------------------------------------------------------------------
def test_a_call_ending_in_voicemail_leaves_a_message_and_lights_mwi(
    server: VoicemailServer, second_device: SecondDevice, tmp_path: Path
) -> None:
    bob = phone(tmp_path, server, "bob")
    alice = phone(tmp_path, server, "alice")
    events = EventStream(server)
    try:
        with bob, alice:
            try:
                _leave_a_message(server, second_device, events, bob, alice)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{dump_logs(bob, alice, server)}") from None
    finally:
        events.close()


def _leave_a_message(
    server: VoicemailServer,
    device: SecondDevice,
    events: EventStream,
    bob: Baresip,
    alice: Baresip,
) -> None:
    assert bob.ctl is not None
    assert device.requests("INVITE") == []  # the call is not placed yet
    call_id, greeting_end = crash_into_voicemail(server, events, bob, alice)
    invites = {r.message.header("Call-ID") for r in device.requests("INVITE")}
    assert len(invites) == 1, invites  # rung once with A1 (and declined)
    assert server.get_json("/api/v1/voicemail/alice") == []  # recording, not stored yet
    assert not device.requests("NOTIFY"), [r.message.text for r in device.requests("NOTIFY")]

    sleep_until(greeting_end + STAY)
    hung_up = time.time()
    bob.ctl.hangup()
    bob.ctl.wait_event("CALL_CLOSED", 5)
    stayed = hung_up - greeting_end
    wait_until(lambda: server.get_json("/api/v1/calls") == [], 5, what="the call to end")
    ended = events.wait("call.ended", timeout=5)
    assert ended["call"] == call_id

    message = the_message(server)
    print(f"message: {message}; bob stayed {stayed:.3f} s after the greeting")
    assert message["user"] == "alice" and message["caller"] == "bob"
    assert message["call"] == call_id
    assert abs(message["seconds"] - stayed) <= SECONDS_TOLERANCE, (message, stayed)
    on_disk = list((server.voicemail_dir).rglob("*.wav"))
    assert [p.name for p in on_disk] == [f"{message['id']}.wav"], on_disk

    recording = read_wav(fetch_wav(server, message, server.workdir / "message.wav"))
    frequency = dominant_frequency(recording)
    loud = active_duration(recording)
    print(
        f"WAV: {recording.duration:.3f} s, {frequency:.1f} Hz, loud for {loud:.2f} s "
        f"(message says {message['seconds']} s)"
    )
    assert abs(frequency - TONES["bob"]) <= TONE_TOLERANCE_HZ, frequency
    # 20 ms frames: the first and last one may be part tone, part nothing
    assert abs(loud - message["seconds"]) <= 0.05 * message["seconds"], (loud, message)

    notify = wait_until(
        lambda: next((r for r in device.requests("NOTIFY") if _waiting(r.message)), None),
        5,
        what="the MWI NOTIFY at alice's second device",
    )
    print(f"MWI NOTIFY {1000 * (notify.at - hung_up):.0f} ms after bob's hang-up")
    print(notify.message.text)
    request = notify.message
    assert request.text.startswith("NOTIFY sip:alice@127.0.0.1:"), request.text
    assert (request.header("Event") or "").split(";")[0].strip() == "message-summary"
    content_type = request.header("Content-Type") or request.header("c") or ""
    assert content_type.split(";")[0].strip() == "application/simple-message-summary"
    body = _summary(request)
    assert body["messages-waiting"] == "yes", body
    assert re.fullmatch(r"1/0(\s*\(0/0\))?", body["voice-message"]), body
    assert body["message-account"] == "sip:alice@127.0.0.1", body
    assert notify.at - hung_up <= 2.0
    # the MWI went once, after the message (none while recording, none before)
    summaries = {
        r.message.header("Call-ID") for r in device.requests("NOTIFY") if _summary(r.message)
    }
    assert len(summaries) == 1, summaries

    assert_bob_heard_the_greeting(bob)
    metrics = server.metrics()
    assert metrics.get('callkeeper_recoveries_total{outcome="voicemail"}') == 1.0, {
        k: v for k, v in metrics.items() if "recover" in k
    }


def _summary(request: Message) -> dict[str, str]:
    fields = {}
    for line in request.body.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    return fields


def _waiting(request: Message) -> bool:
    return _summary(request).get("messages-waiting") == "yes"


# --- 2. the silence stop ---------------------------------------------------------------------------
def test_voicemail_ends_the_call_after_silence(server: VoicemailServer, tmp_path: Path) -> None:
    bob = phone(tmp_path, server, "bob")
    alice = phone(tmp_path, server, "alice")
    events = EventStream(server)
    try:
        with bob, alice:
            try:
                _fall_silent(server, events, bob, alice)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{dump_logs(bob, alice, server)}") from None
    finally:
        events.close()


def _fall_silent(
    server: VoicemailServer, events: EventStream, bob: Baresip, alice: Baresip
) -> None:
    assert bob.ctl is not None
    call_id, greeting_end = crash_into_voicemail(server, events, bob, alice)
    sleep_until(greeting_end + TONE_THEN_MUTE)
    muted = time.time()
    answer = bob.ctl.command("mute")
    assert "muted" in str(answer.get("data", "")), answer
    bob.ctl.wait_event("CALL_CLOSED", VOICEMAIL_SILENCE_SECONDS + 5)
    closed = time.time()
    print(f"bob muted; callkeeper hung up on him {closed - muted:.2f} s later")
    assert VOICEMAIL_SILENCE_SECONDS - 0.3 <= closed - muted <= VOICEMAIL_SILENCE_SECONDS + 1.0
    ended = events.wait("call.ended", timeout=5)
    assert ended["call"] == call_id and "voicemail" in ended["reason"], ended
    wait_until(lambda: server.get_json("/api/v1/calls") == [], 5, what="the call to end")
    # bob was hung up on: he did not send the BYE, he received it
    assert "BYE sip:" in _received_by(bob), "no BYE reached bob"

    message = the_message(server)
    expected = TONE_THEN_MUTE  # the silence that ended it is not kept
    print(f"message: {message}; tone {TONE_THEN_MUTE} s → {expected} s expected")
    assert message["caller"] == "bob" and message["call"] == call_id
    assert abs(message["seconds"] - expected) <= SECONDS_TOLERANCE, (message, expected)
    recording = read_wav(fetch_wav(server, message, server.workdir / "message.wav"))
    frequency = dominant_frequency(recording)
    start, end = active_span(recording)
    loud = active_duration(recording)
    print(f"WAV: {recording.duration:.3f} s, {frequency:.1f} Hz, loud {start:.2f}-{end:.2f} s")
    assert abs(frequency - TONES["bob"]) <= TONE_TOLERANCE_HZ, frequency
    assert start == 0.0 and abs(end - TONE_THEN_MUTE) <= SECONDS_TOLERANCE, (start, end)
    assert abs(loud - (end - start)) <= 0.04, loud  # one block of tone
    assert recording.duration - end <= 0.1  # and not the 10 s of silence after it


def _received_by(p: Baresip) -> str:
    """Every SIP message `p` received (its -s trace), as one text."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", p.log())
    trace = re.compile(r"^(?:UDP|TCP) \S+:(\d+) -> \S+:(\d+)\s*$", re.MULTILINE)
    marks = list(trace.finditer(text))
    parts = []
    for mark, following in zip(marks, [*marks[1:], None], strict=False):
        if int(mark.group(2)) == p.sip_port:
            parts.append(text[mark.end() : following.start() if following else len(text)])
    return "".join(parts)
