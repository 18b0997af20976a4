"""Calls between real phones: two baresip instances register to callkeeper with digest auth (UDP,
TCP, or one of each), alice calls bob, bob auto-answers, each hears the other's tone, one side hangs
up and both legs end. Media mode "off": the SDP passes through, RTP flows phone to phone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.audio import active_duration, dominant_frequency, read_wav, tone_to_total_ratio
from support.baresip import Baresip, baresip_binary
from support.server import ServerProcess, wait_until

pytestmark = pytest.mark.peers

PASSWORDS = {"alice": "alice-pw-7", "bob": "bob-pw-9"}
TONES = {"alice": 440, "bob": 1000}
TALK_TIME = 3.0  # seconds of audio to let flow; the waits around it are all events or polls
AUDIT_INTERVAL = 1.0  # in-dialog OPTIONS to both phones several times per call
AUDITS_ALIVE = 'callkeeper_dialog_audits_total{result="alive"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    baresip_binary()  # fail loudly before starting anything when the peer is missing
    users = "".join(f'[[users]]\nname = "{n}"\npassword = "{p}"\n' for n, p in PASSWORDS.items())
    process = ServerProcess(
        tmp_path_factory.mktemp("callkeeper"),
        extra_config=(
            f'[media]\nmode = "off"\n[keepalive]\ndialog_interval = {AUDIT_INTERVAL}\n'
            f'[log]\nlevel = "debug"\n{users}'
        ),
    )
    with process:
        yield process


def endpoints_of(server: ServerProcess, user: str) -> list[dict[str, Any]]:
    return [e for e in server.get_json("/api/v1/endpoints") if e["user"] == user]


def phone(tmp_path: Path, server: ServerProcess, name: str, transport: str) -> Baresip:
    return Baresip(
        tmp_path / name,
        name,
        server.sip_port,
        PASSWORDS[name],
        transport=transport,
        tone_hz=TONES[name],
    )


def wait_registered(server: ServerProcess, *phones: Baresip) -> None:
    """Every phone is listed by /api/v1/endpoints with its user and transport (this also proves
    the digest auth: callkeeper only stores bindings of authenticated REGISTERs). A REGISTER that
    baresip reports as failed ends the wait at once."""

    def registered(p: Baresip) -> bool:
        errors = p.registration_errors()
        assert not errors, f"{p.name} could not register over {p.transport}: {errors}"
        return any(
            e["transport"] == p.transport
            and f":{p.sip_port}" in e["contact"]
            and e["state"] == "alive"
            for e in endpoints_of(server, p.name)
        )

    for p in phones:
        wait_until(lambda p=p: registered(p), 10, what=f"{p.name} registered over {p.transport}")


def only_call(server: ServerProcess) -> dict[str, Any]:
    calls = server.get_json("/api/v1/calls")
    assert len(calls) == 1, calls
    return calls[0]  # type: ignore[no-any-return]


def run_call(server: ServerProcess, alice: Baresip, bob: Baresip, hangup_by: str) -> None:
    """alice dials bob through callkeeper; after TALK_TIME `hangup_by` hangs up."""
    assert alice.ctl is not None and bob.ctl is not None
    wait_registered(server, alice, bob)
    assert server.get_json("/api/v1/calls") == []

    audits_before = server.metric(AUDITS_ALIVE)
    alice.ctl.dial(f"sip:bob@127.0.0.1:{server.sip_port}")
    alice.ctl.wait_event("CALL_ESTABLISHED", 10)
    bob.ctl.wait_event("CALL_ESTABLISHED", 10)
    established = time.monotonic()

    wait_until(lambda: only_call(server)["state"] == "active", 5, what="call active in the API")
    call = only_call(server)
    assert len(call["legs"]) == 2, call
    assert {leg["user"] for leg in call["legs"]} == {"alice", "bob"}, call
    assert server.metric("callkeeper_calls_active") == 1

    # Let audio flow. Both sides' RTP must be up (CALL_RTPESTAB) before the clock starts.
    alice.ctl.wait_event("CALL_RTPESTAB", 5)
    bob.ctl.wait_event("CALL_RTPESTAB", 5)
    time.sleep(TALK_TIME)

    hanger, other = (alice, bob) if hangup_by == "alice" else (bob, alice)
    assert hanger.ctl is not None and other.ctl is not None
    hanger.ctl.hangup()
    hanger.ctl.wait_event("CALL_CLOSED", 5)
    other.ctl.wait_event("CALL_CLOSED", 5)
    call_seconds = time.monotonic() - established

    wait_until(lambda: server.get_json("/api/v1/calls") == [], 5, what="the call to leave the API")
    assert server.metric("callkeeper_calls_active") == 0

    assert server.metric("callkeeper_core_errors_total") == 0
    # Both phones answered every audit of the call as a live dialog, and it changed nothing.
    audits = server.metrics()
    assert audits[AUDITS_ALIVE] - audits_before >= 2 * int(TALK_TIME / AUDIT_INTERVAL) - 2, audits
    assert audits['callkeeper_dialog_audits_total{result="gone"}'] == 0
    assert audits['callkeeper_dialog_audits_total{result="silent"}'] == 0
    check_audio(alice, heard="bob", call_seconds=call_seconds)
    check_audio(bob, heard="alice", call_seconds=call_seconds)


def check_audio(listener: Baresip, heard: str, call_seconds: float) -> None:
    """The listener's received (decoded) WAV holds the other side's tone for about the call's
    length (sndfile's file is complete once the call has closed)."""
    dumps = listener.wav_files("dec")
    assert len(dumps) == 1, (dumps, listener.log()[-2000:])
    recording = read_wav(dumps[0])
    frequency = dominant_frequency(recording)
    expected = TONES[heard]
    loud = active_duration(recording)
    print(
        f"{listener.name} heard {frequency:.1f} Hz (expected {expected}), "
        f"{loud:.2f} s of sound in a {recording.duration:.2f} s file, call {call_seconds:.2f} s"
    )
    assert abs(frequency - expected) <= 0.05 * expected, (listener.name, frequency)
    assert tone_to_total_ratio(recording, frequency) > 0.8, "the tone is buried in noise"
    # From answer to hang-up; the first RTP and the jitter buffer take a few tens of ms.
    assert call_seconds - 0.8 <= loud <= call_seconds + 0.3, (loud, call_seconds)


@pytest.mark.parametrize(
    ("alice_transport", "bob_transport", "hangup_by"),
    [("udp", "udp", "alice"), ("tcp", "tcp", "bob"), ("udp", "tcp", "alice")],
    ids=["udp-caller-hangs-up", "tcp-callee-hangs-up", "udp-calls-tcp"],
)
def test_call_between_two_baresip_phones(
    server: ServerProcess, tmp_path: Path, alice_transport: str, bob_transport: str, hangup_by: str
) -> None:
    with phone(tmp_path, server, "alice", alice_transport) as alice, \
            phone(tmp_path, server, "bob", bob_transport) as bob:  # fmt: skip
        try:
            run_call(server, alice, bob, hangup_by)
        except AssertionError as error:
            raise AssertionError(
                f"{error}\n--- alice ---\n{alice.log()[-4000:]}\n--- bob ---\n{bob.log()[-4000:]}"
                f"\n--- callkeeper ---\n{server.log()[-4000:]}"
            ) from None
