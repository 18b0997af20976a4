"""Issue 6 on the wire: calls survive a lost endpoint, with SIPp peers and `callkeeper serve`.

A caller (SIPp, trusted source, tests/scenarios/recovery_caller.xml) calls alice; alice's devices
are SIPp UASs that are her static contacts (probed by OPTIONS; recovery_device*.xml). Then
alice's first device is cut off the network by iptables (tests/support/loopback_partition.py:
INPUT DROP on lo of its port only, deleted in teardown) and callkeeper (media.mode "off") must:

- hold the caller by re-INVITE (a=sendonly) and never send it a BYE: the caller scenario has no
  `<recv request="BYE">`, so a BYE would fail its call and SIPp would exit 1;
- device back within grace → re-INVITE on the original dialog (same Call-ID), outcome resumed;
- never back → the fallback chain: alice's other device, her mobile through the trunk (a SIPp
  answering at the trunk's address), voicemail (a SIPp at `recovery.voicemail_uri`);
- the caller hanging up while held or while a fallback rings → everything released, ringing legs
  CANCELled, no INVITE afterwards, outcome `abandoned`.

The caller hangs up when the test says so: a MESSAGE with the caller's Call-ID sent to its port.
Needs root (iptables); fails with that message otherwise. Times measured here are printed (-s).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from support.loopback_partition import LoopbackPartition
from support.server import ServerProcess, wait_until
from support.sipp import SCENARIOS, Sipp
from support.sipp_trace import TracedMessage, read_trace, requests

GRACE = 3.0
RING_TIMEOUT = 3.0
IN_CALL_INTERVAL = 0.5
MISSES = 2
DOWN_AFTER = IN_CALL_INTERVAL * MISSES + 0.5  # the liveness monitor's silence threshold
MOBILE = "+4915100001"

pytestmark = pytest.mark.timeout(60)


# --- peers -------------------------------------------------------------------------------------
class Peer(Sipp):
    """A SIPp with a message trace, read with support.sipp_trace."""

    @property
    def trace(self) -> Path:
        return self.workdir / f"{self.name}-messages.log"

    def messages(self) -> list[TracedMessage]:
        return read_trace(self.trace)

    def received(self, method: str) -> list[TracedMessage]:
        return requests(self.trace, method)

    def sent_statuses(self, cseq_method: str) -> list[int]:
        return [
            m.status
            for m in self.messages()
            if m.direction == "sent" and m.status is not None and m.cseq_method == cseq_method
        ]


def device(workdir: Path, scenario: str, name: str) -> Peer:
    args = ["-sf", str(SCENARIOS / scenario), "-trace_msg", "-message_file"]
    args += [str(workdir / f"{name}-messages.log"), "-timeout", "110"]
    return Peer(workdir, args, name=name)


def caller(workdir: Path, server: ServerProcess) -> Peer:
    args = ["-sf", str(SCENARIOS / "recovery_caller.xml"), "-s", "alice", "-m", "1"]
    args += ["-cid_str", "ckcaller-%u-%p@%s", "-trace_msg", "-message_file"]
    args += [str(workdir / "caller-messages.log"), "-timeout", "110"]
    return Peer(workdir, args, target=f"127.0.0.1:{server.sip_port}", name="caller")


def caller_call_id(peer: Peer) -> str:
    assert peer.process is not None
    return f"ckcaller-1-{peer.process.pid}@127.0.0.1"


def hang_up(peer: Peer) -> None:
    """Tell the caller scenario to send BYE (see recovery_caller.xml)."""
    call_id = caller_call_id(peer)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.sendto(
            (
                f"MESSAGE sip:caller@127.0.0.1:{peer.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-hangup-{port}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:test@127.0.0.1>;tag=test\r\n"
                f"To: <sip:caller@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", peer.port),
        )


def reinvites_to_caller(peer: Peer) -> list[TracedMessage]:
    return [m for m in peer.received("INVITE") if m.call_id == caller_call_id(peer)]


# --- callkeeper --------------------------------------------------------------------------------
def alice_config(
    statics: list[Peer],
    *,
    trunk: Peer | None = None,
    voicemail: Peer | None = None,
) -> str:
    contacts = ", ".join(f'"sip:alice@127.0.0.1:{peer.port}"' for peer in statics)
    text = (
        f"[keepalive]\noptions_interval = 1\nin_call_interval = {IN_CALL_INTERVAL}\n"
        f"misses = {MISSES}\n"
        f"[recovery]\ngrace = {GRACE}\nring_timeout = {RING_TIMEOUT}\n"
    )
    if voicemail is not None:
        text += f'voicemail_uri = "sip:127.0.0.1:{voicemail.port}"\n'
    text += '[media]\nmode = "off"\n[log]\nformat = "json"\n'
    text += f'[[users]]\nname = "alice"\nstatic_contacts = [{contacts}]\n'
    if trunk is not None:
        text += f'mobile = "tel:{MOBILE}"\n'
    if voicemail is not None:
        text += "voicemail = true\n"
    if trunk is not None:
        text += f'[[trunks]]\nname = "pstn"\nuri = "sip:127.0.0.1:{trunk.port}"\nmatch = "+49"\n'
    return text


def start_server(workdir: Path, config: str) -> ServerProcess:
    return ServerProcess(
        workdir / "ck",
        sip_extra='trusted_sources = ["127.0.0.1/32"]\n',
        extra_config=config,
        transports=("udp",),
    )


def events(server: ServerProcess, name: str | None = None) -> list[dict[str, Any]]:
    """The structured log's events (JSON lines), in order."""
    out = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if name is None or record.get("event") == name:
                out.append(record)
    return out


def logged(server: ServerProcess, name: str, timeout: float = 3) -> list[dict[str, Any]]:
    """Wait until the log has at least one `name` event; return them all."""
    found = wait_until(lambda: events(server, name), timeout, what=f"{name} in the log")
    return found  # type: ignore[no-any-return]


def event_time(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def calls(server: ServerProcess) -> list[dict[str, Any]]:
    listing: list[dict[str, Any]] = server.get_json("/api/v1/calls")  # type: ignore[assignment]
    return listing


def the_call(server: ServerProcess) -> dict[str, Any]:
    listing = calls(server)
    assert len(listing) == 1, listing
    return listing[0]


def wait_state(
    server: ServerProcess, state: str, timeout: float, recovered: int | None = None
) -> tuple[dict[str, Any], float]:
    """Wait for the call to be in `state` (after `recovered` recoveries, if given); return it and
    when it was seen (monotonic)."""

    def matching() -> dict[str, Any] | None:
        for call in calls(server):
            if call["state"] == state and recovered in (None, call["recoveries"]):
                return call
        return None

    return wait_until(matching, timeout, what=f"the call to be {state}"), time.monotonic()


def wait_alive(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: (
            (endpoints := server.get_json("/api/v1/endpoints"))
            and sum(e["state"] == "alive" for e in endpoints) >= count
            and endpoints
        ),
        10,
        what=f"{count} endpoint(s) alive",
    )


def endpoint_of(server: ServerProcess, peer: Peer) -> dict[str, Any]:
    return next(
        e for e in server.get_json("/api/v1/endpoints") if e["contact"].endswith(f":{peer.port}")
    )


def recoveries(server: ServerProcess, outcome: str) -> float:
    return server.metric(f'callkeeper_recoveries_total{{outcome="{outcome}"}}')


@dataclass
class Scene:
    """callkeeper with alice's devices up and an answered call from the caller."""

    server: ServerProcess
    uac: Peer
    alice: Peer  # the device that answered the call (and is then cut off)
    original: TracedMessage  # the INVITE alice's device answered
    peers: list[Peer]

    def no_peer_errors(self) -> None:
        """No SIPp aborted a call on an unexpected message (or any other error)."""
        for peer in self.peers:
            text = peer.errors()
            assert "Aborting" not in text and "nexpected" not in text, (peer.name, text)

    def hold(self, partition: LoopbackPartition) -> tuple[float, float]:
        """Cut alice's device off; wait until the caller is held. Returns (cut, held) times."""
        assert self.server.metric("callkeeper_calls_active") == 1
        cut = time.monotonic()
        partition.cut(self.alice.port)
        _, held = wait_state(self.server, "holding", DOWN_AFTER + 3)
        hold = wait_until(lambda: reinvites_to_caller(self.uac), 3, what="the hold re-INVITE")
        assert "a=sendonly" in hold[0].body, hold[0].body
        wait_until(lambda: self.uac.sent_statuses("INVITE")[-1:] == [200], 3, what="hold 200")
        (down,) = logged(self.server, "endpoint.down")
        assert down["reason"] == "timeout"
        assert logged(self.server, "call.held")[0]["endpoint"] == down["endpoint"]
        assert logged(self.server, "endpoint.reboot_requested")
        return cut, held

    def no_bye_to_caller(self) -> None:
        assert not self.uac.received("BYE"), "the survivor was sent a BYE"
        assert self.uac.process is not None and self.uac.process.poll() is None

    def unheld(self, timeout: float) -> TracedMessage:
        """The caller's un-hold re-INVITE (the second one) with the bridged leg's SDP."""
        unhold = wait_until(
            lambda: (invites := reinvites_to_caller(self.uac)) and len(invites) >= 2 and invites,
            timeout,
            what="the un-hold re-INVITE",
        )
        assert len(unhold) == 2, [m.body for m in unhold]
        assert "a=sendrecv" in unhold[1].body, unhold[1].body
        second: TracedMessage = unhold[1]
        return second

    def end(self, leg: Peer, call_id: str) -> None:
        """The caller hangs up: its BYE reaches `leg` on `call_id`; nothing is left."""
        self.no_bye_to_caller()
        hang_up(self.uac)
        assert self.uac.wait(10) == 0, self.uac.errors()
        byes = wait_until(lambda: leg.received("BYE"), 5, what=f"the BYE at {leg.name}")
        assert byes[-1].call_id == call_id
        released(self.server)
        self.no_peer_errors()


def released(server: ServerProcess) -> None:
    wait_until(lambda: calls(server) == [], 5, what="no calls")
    wait_until(lambda: server.metric("callkeeper_calls_active") == 0, 5, what="0 active calls")


@pytest.fixture
def partition() -> Iterator[LoopbackPartition]:
    with LoopbackPartition("test_recovery_sipp") as cut:
        yield cut


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[..., Scene]]:
    """Start the given peers and callkeeper, place the call; stop everything afterwards."""
    started: list[Sipp | ServerProcess] = []

    def build(
        statics: list[Peer], trunk: Peer | None = None, voicemail: Peer | None = None
    ) -> Scene:
        for peer in [*statics, trunk, voicemail]:
            if peer is not None:
                started.append(peer.start())
        server = start_server(tmp_path, alice_config(statics, trunk=trunk, voicemail=voicemail))
        started.append(server.start())
        wait_alive(server, len(statics))
        uac = caller(tmp_path, server)
        started.append(uac.start())
        call, _ = wait_state(server, "active", 10)
        invite = wait_until(lambda: uac.messages(), 5, what="the caller's INVITE")[0]
        assert invite.method == "INVITE" and invite.call_id == caller_call_id(uac)
        answered = statics[0]
        original = wait_until(lambda: answered.received("INVITE"), 5, what="alice's INVITE")
        assert len(original) == 1
        assert call["recoveries"] == 0
        peers = [p for p in [*statics, trunk, voicemail, uac] if p is not None]
        return Scene(server, uac, answered, original[0], peers)

    yield build
    for item in reversed(started):
        if isinstance(item, ServerProcess):
            if item.process is not None and item.process.poll() is None:
                item.stop()
        else:
            item.stop()


# --- 1. partition within grace ---------------------------------------------------------------
def test_a_partition_shorter_than_grace_resumes_the_same_dialog(
    tmp_path: Path, partition: LoopbackPartition, stack: Callable[..., Scene]
) -> None:
    scene = stack([device(tmp_path, "recovery_device.xml", "alice1")])
    server, alice = scene.server, scene.alice
    cut, held = scene.hold(partition)

    # cut off for half of grace (held all the while), then the network comes back
    while time.monotonic() < held + GRACE / 2:
        assert the_call(server)["state"] == "holding"
        time.sleep(0.1)
    assert partition.dropped(alice.port) > 0
    healed = time.monotonic()
    partition.heal(alice.port)
    call, resumed = wait_state(server, "active", GRACE + 3, recovered=1)
    assert resumed - held < GRACE + 1.5
    assert call["recoveries"] == 1
    unhold = scene.unheld(3)

    # alice's device got a re-INVITE on the ORIGINAL dialog, and no new INVITE
    invites = alice.received("INVITE")
    assert [m.call_id for m in invites] == [scene.original.call_id] * 2, invites
    reinvite = invites[1]
    assert ";tag=" in (reinvite.header("To") or "")
    assert reinvite.header("Call-Info") is None
    assert alice.sent_statuses("INVITE")[-1] == 200
    (outcome,) = logged(server, "call.resumed")
    assert outcome["outcome"] == "resumed" and outcome["new_dialog"] is False
    assert not events(server, "call.transferring")
    assert recoveries(server, "resumed") == 1
    assert "m=audio" in unhold.body

    down = events(server, "endpoint.down")[0]
    print(
        f"\npartition within grace: DOWN {held - cut:.2f} s after the cut "
        f"(server: detection_seconds {down['detection_seconds']}), held for "
        f"{healed - held:.2f} s, active again {resumed - healed:.2f} s after the network came "
        f"back (server: resume_seconds {outcome.get('resume_seconds')}, recovery_seconds "
        f"{outcome['recovery_seconds']})"
    )
    scene.end(alice, scene.original.call_id)
    assert recoveries(server, "abandoned") == 0


# --- 2. never returns: the fallback chain ----------------------------------------------------
CHAIN = {
    # case: (alice's devices, trunk scenario, voicemail?, outcome, step that answers)
    "other-device": (["recovery_device.xml", "recovery_device_ringing.xml"], None, False,
                     "transferred", "devices"),
    "mobile": (["recovery_device.xml"], "recovery_device.xml", False, "transferred", "mobile"),
    "mobile-busy": (["recovery_device.xml"], "recovery_busy.xml", True, "voicemail",
                    "voicemail"),
    "mobile-no-answer": (["recovery_device.xml"], "recovery_noanswer.xml", True, "voicemail",
                         "voicemail"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CHAIN))
def test_a_device_that_never_returns_is_replaced_by_the_fallback_chain(
    tmp_path: Path, partition: LoopbackPartition, stack: Callable[..., Scene], case: str
) -> None:
    scenarios, trunk_scenario, with_voicemail, outcome, answering_step = CHAIN[case]
    statics = [
        device(tmp_path, scenario, f"alice{index + 1}") for index, scenario in enumerate(scenarios)
    ]
    trunk = device(tmp_path, trunk_scenario, "trunk") if trunk_scenario else None
    voicemail = device(tmp_path, "recovery_device.xml", "voicemail") if with_voicemail else None
    scene = stack(statics, trunk, voicemail)
    server = scene.server
    if len(statics) > 1:  # the second device lost the race for the call: CANCELled
        assert wait_until(lambda: statics[1].received("CANCEL"), 3, what="the CANCEL")
        # SIPp answers the CANCEL, then the INVITE with 487: its trace may lag the CANCEL's
        assert wait_until(
            lambda: 487 in statics[1].sent_statuses("INVITE"), 3, what="its 487 to the INVITE"
        )
    _, held = scene.hold(partition)

    # grace runs out while the device stays cut off
    # (a leg that answers at once leaves `transferring` within milliseconds: the log has it)
    chain = logged(server, "call.transferring", GRACE + 2)[0]
    waited = event_time(chain) - event_time(logged(server, "call.held")[0])
    assert GRACE - 0.2 < waited < GRACE + 1, waited
    call, bridged = wait_state(server, "active", 2 * RING_TIMEOUT + 3, recovered=1)
    assert call["recoveries"] == 1
    unhold = scene.unheld(3)
    scene.no_bye_to_caller()

    winner = {"devices": statics[-1], "mobile": trunk, "voicemail": voicemail}[answering_step]
    assert winner is not None
    new_leg = [m for m in winner.received("INVITE") if ";tag=" not in (m.header("To") or "")][-1]
    assert new_leg.call_id != scene.original.call_id
    assert new_leg.header("Call-Info") is None  # another device rings normally
    assert "m=audio" in new_leg.body  # early offer: the caller's SDP
    assert winner.sent_statuses("INVITE")[-1] == 200
    assert "m=audio" in unhold.body
    steps = [e["step"] for e in events(server, "call.transferring")]
    (done,) = logged(server, "call.transferred")
    assert done["outcome"] == outcome and done["new_dialog"] is True, done
    assert recoveries(server, outcome) == 1
    assert the_call(server)["legs"][1]["endpoint"] != endpoint_of(server, scene.alice)["id"]

    if trunk is not None:
        mobile = trunk.received("INVITE")
        assert len(mobile) == 1, mobile
        assert mobile[0].uri.startswith(f"sip:{MOBILE}@127.0.0.1:{trunk.port}"), mobile[0].uri
        assert steps[0] == "mobile", steps
    if case == "mobile-busy":
        assert trunk is not None and trunk.sent_statuses("INVITE")[-1] == 486
        assert trunk.received("ACK")
    if case == "mobile-no-answer":
        assert trunk is not None and trunk.received("CANCEL")
        assert trunk.sent_statuses("INVITE")[-1] == 487
        assert trunk.received("ACK")
        mobile_at = event_time(events(server, "call.transferring")[0])
        voicemail_at = event_time(events(server, "call.transferring")[1])
        assert RING_TIMEOUT - 0.3 < voicemail_at - mobile_at < RING_TIMEOUT + 1.5
    if voicemail is not None:
        box = voicemail.received("INVITE")
        assert len(box) == 1 and box[0].uri.startswith("sip:alice@127.0.0.1"), box
        assert steps[-1] == "voicemail", steps
    if case == "other-device":
        assert steps == ["devices"], steps

    first_step = event_time(events(server, "call.transferring")[0])
    print(
        f"\n{case}: transferring {waited:.2f} s after the hold (grace {GRACE}), "
        f"bridged to the {answering_step} leg {event_time(done) - first_step:.2f} s after the "
        f"chain started ({bridged - held:.2f} s after the hold as seen by the API; server "
        f"recovery_seconds {done['recovery_seconds']})"
    )
    scene.end(winner, new_leg.call_id)


# --- 3. the survivor hangs up during the recovery ----------------------------------------------
@pytest.mark.parametrize("when", ["holding", "transferring"])
def test_the_survivor_hanging_up_mid_recovery_releases_everything(
    tmp_path: Path, partition: LoopbackPartition, stack: Callable[..., Scene], when: str
) -> None:
    alice = device(tmp_path, "recovery_device.xml", "alice1")
    trunk = device(tmp_path, "recovery_noanswer.xml", "trunk")
    voicemail = device(tmp_path, "recovery_device.xml", "voicemail")
    scene = stack([alice], trunk, voicemail)
    server = scene.server
    scene.hold(partition)
    if when == "transferring":
        wait_state(server, "transferring", GRACE + 2)
        wait_until(lambda: trunk.received("INVITE"), 3, what="the mobile ringing")
        wait_until(lambda: trunk.sent_statuses("INVITE") == [100, 180], 3, what="180 Ringing")
    assert recoveries(server, "abandoned") == 0

    scene.no_bye_to_caller()
    hung_up = time.monotonic()
    hang_up(scene.uac)
    assert scene.uac.wait(10) == 0, scene.uac.errors()
    released(server)
    wait_until(lambda: recoveries(server, "abandoned") == 1, 3, what="abandoned counted")
    if when == "transferring":
        cancel = wait_until(lambda: trunk.received("CANCEL"), 3, what="the CANCEL")
        assert cancel[0].call_id == trunk.received("INVITE")[0].call_id
        assert trunk.sent_statuses("INVITE")[-1] == 487

    # alice's device comes back; for grace × 2 nobody is rung again
    partition.heal(alice.port)
    wait_until(
        lambda: endpoint_of(server, alice)["state"] == "alive", DOWN_AFTER + 3, what="alice back"
    )
    deadline = hung_up + 2 * GRACE
    while time.monotonic() < deadline:
        assert alice.received("INVITE") == [scene.original], "alice rung after the hang-up"
        assert len(trunk.received("INVITE")) == (1 if when == "transferring" else 0)
        assert not voicemail.received("INVITE")
        assert calls(server) == []
        time.sleep(0.2)
    assert recoveries(server, "abandoned") == 1
    assert sum(recoveries(server, o) for o in ("resumed", "transferred", "voicemail", "lost")) == 0
    assert not scene.uac.received("BYE")
    scene.no_peer_errors()
