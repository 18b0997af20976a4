"""`media.mode = "rtpengine"` on the wire: real baresip phones, the real `callkeeper serve`, and
Debian's rtpengine (userspace) carrying the media.

1. bob calls alice: each phone's SDP names rtpengine (an address and port in rtpengine's range,
   never the other phone), each phone's recording holds the other's tone for the call's length,
   and when the call ends its rtpengine call is deleted.
2. Recovery: alice's baresip is SIGKILLed mid-call; bob is not re-INVITEd: rtpengine plays him the
   announcement (normalised cross-correlation against the shipped prompt) and then the music, and
   when alice returns within grace rtpengine sends him her new tone on the same ports.
3. alice dials `*86` from her second phone: the call moves there, tones checked both ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.baresip import Baresip, baresip_binary
from support.rtpengine import Rtpengine
from support.server import ServerProcess, wait_until
from test_recovery_baresip import (
    EventStream,
    dump_logs,
    move_call,
)
from test_recovery_baresip import phone as recovery_phone
from test_relay_baresip import (
    FLOW_TIMER,
    GRACE,
    IN_CALL,
    MISSES,
    PASSWORDS,
    TONES,
    assert_announcement_then,
    assert_bob_was_not_reinvited,
    assert_heard_each_other,
    crash_and_return,
    phone,
    sdp_received,
    talk,
)

pytestmark = pytest.mark.peers


@dataclass
class MediaServer(ServerProcess):
    rtpengine: Rtpengine | None = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MediaServer]:
    baresip_binary()
    users = "".join(f'[[users]]\nname = "{n}"\npassword = "{p}"\n' for n, p in PASSWORDS.items())
    with Rtpengine(tmp_path / "rtpengine") as rtpengine:
        process = MediaServer(
            tmp_path / "callkeeper",
            extra_config=(
                f'[media]\nmode = "rtpengine"\nrtpengine = "{rtpengine.address}"\n'
                f'[log]\nlevel = "debug"\n'
                f"[keepalive]\nflow_timer = {FLOW_TIMER}\nin_call_interval = {IN_CALL}\n"
                f"misses = {MISSES}\n"
                f'[recovery]\ngrace = {GRACE}\nring_timeout = 10\nfallback = ["devices"]\n{users}'
            ),
            rtpengine=rtpengine,
        )
        with process:
            yield process


def assert_sdp_names_rtpengine(p: Baresip, server: MediaServer, other: Baresip) -> None:
    assert server.rtpengine is not None
    low, high = server.rtpengine.ports
    bodies = sdp_received(p)
    print(f"{p.name} was told to send RTP to {bodies} (rtpengine range {low}-{high})")
    assert bodies, f"{p.name} received no SDP"
    other_low, other_high = other.rtp_ports
    for host, port in bodies:
        assert host == "127.0.0.1" and low <= port <= high, (host, port)
        assert not other_low <= port <= other_high  # never the other phone's own port


def explain(server: MediaServer, *phones: Baresip) -> str:
    assert server.rtpengine is not None
    return f"{dump_logs(*phones, server)}\n--- rtpengine ---\n{server.rtpengine.log()[-4000:]}"


# --- 1. a call through rtpengine -----------------------------------------------------------------
def test_a_call_through_rtpengine_carries_both_tones(server: MediaServer, tmp_path: Path) -> None:
    bob = phone(tmp_path, server, "bob", "bob")
    alice = phone(tmp_path, server, "alice", "alice")
    with bob, alice:
        try:
            _talk(server, bob, alice)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{explain(server, bob, alice)}") from None


def _talk(server: MediaServer, bob: Baresip, alice: Baresip) -> None:
    rtpengine = server.rtpengine
    assert rtpengine is not None
    ready = set(rtpengine.calls())  # the slots callkeeper set up in advance
    assert len(ready) >= 16, ready
    call_seconds = talk(server, bob, alice, lambda: None)
    # the call's slot is deleted in rtpengine (one of the ready ones, now gone)
    wait_until(
        lambda: len(ready - set(rtpengine.calls())) == 1,
        5,
        what="the call's rtpengine call to be deleted",
    )
    metrics = server.metrics()
    assert metrics["callkeeper_media_rtpengine_failures_total"] == 0, metrics
    assert metrics["callkeeper_media_unanchored_total"] == 0, metrics
    assert metrics["callkeeper_media_rtpengine_slots"] >= 1, metrics
    assert_sdp_names_rtpengine(bob, server, alice)
    assert_sdp_names_rtpengine(alice, server, bob)
    assert_heard_each_other(bob, alice, call_seconds)


# --- 2. recovery through rtpengine ---------------------------------------------------------------
def test_rtpengine_holds_the_survivor_with_the_announcement(
    server: MediaServer, tmp_path: Path
) -> None:
    bob = phone(tmp_path, server, "bob", "bob")
    alice = phone(tmp_path, server, "alice", "alice")
    events = EventStream(server)
    try:
        with bob, alice:
            try:
                _crash_and_return(server, events, bob, alice)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{explain(server, bob, alice)}") from None
    finally:
        events.close()


def _crash_and_return(
    server: MediaServer, events: EventStream, bob: Baresip, alice: Baresip
) -> None:
    crash_and_return(server, events, bob, alice)
    assert server.metrics()["callkeeper_media_rtpengine_failures_total"] == 0
    assert_bob_was_not_reinvited(bob)  # rtpengine held him: his phone was not touched
    assert_announcement_then(bob, TONES["alice2"])


# --- 3. the feature code through rtpengine ---------------------------------------------------------
def test_the_feature_code_moves_the_call_through_rtpengine(
    server: MediaServer, tmp_path: Path
) -> None:
    """recovery issue's `*86` scenario (alice's second phone pulls her call), with rtpengine
    carrying the media: both directions' tones are checked after the move."""
    bob = recovery_phone(tmp_path, server, "bob", "bob")
    a1 = recovery_phone(tmp_path, server, "alice", "alice")
    a2 = recovery_phone(tmp_path, server, "alice2", "alice", answermode="manual")
    events = EventStream(server)
    try:
        with bob, a1:
            try:
                move_call(server, events, bob, a1, a2, "feature-code")
            except AssertionError as error:
                raise AssertionError(f"{error}\n{explain(server, bob, a1, a2)}") from None
            finally:
                if a2.process is not None:
                    a2.stop()
    finally:
        events.close()
    assert server.metrics()["callkeeper_media_rtpengine_failures_total"] == 0
