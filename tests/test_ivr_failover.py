"""IVR failover on the wire (issue 8): two `callkeeper ivr` node processes and one `callkeeper
serve` on loopback share a SQLite store file. A SIPp caller (tests/scenarios/ivr_caller.xml)
dials the IVR user and presses keys with SIP INFO (application/dtmf-relay) when the test tells
it to; `billing` is a SIPp device (a static contact) the sample script transfers to.

- killed after 2 of 4 account digits: the call manager detects the node DOWN (flow_timer 1 s ×
  misses 3 + 0.5 s), moves the call to the other node with the session id, and that node replays
  the account prompt with the 2 digits kept; the last 2 digits reach billing (the call's final
  state: caller ⇄ billing, active).
- killed mid-prompt: the account prompt is replayed from its start on the other node; "0000"
  reaches the unknown-account branch, which says goodbye and hangs up.

The nodes listen on 127.0.0.2, outside `trusted_sources`, so they register with digest auth.
Times measured here are printed (-s).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.ports import free_port
from support.server import ServerProcess, wait_until
from support.sipp import SCENARIOS, Sipp
from support.sse import EventStream

SCRIPT = Path(__file__).resolve().parent.parent / "src/callkeeper/ivr/samples/support.toml"
FLOW_TIMER, MISSES = 1, 3
DETECTION = FLOW_TIMER * MISSES + 0.5  # the server's silence threshold for an outbound flow
NODE_HOST = "127.0.0.2"

pytestmark = pytest.mark.timeout(120)


def start_peer(make: Callable[[], Sipp], attempts: int = 3) -> Sipp:
    """Start a SIPp; start a fresh one (new ports) when it dies at once. SIPp binds its media
    port and media port + 2 (video), and only the first is probed free: on a busy machine the
    second can be taken ("Unable to bind video RTP socket")."""
    for _ in range(attempts):
        sipp = make().start()
        time.sleep(0.3)
        assert sipp.process is not None
        if sipp.process.poll() is None:
            return sipp
    raise AssertionError(f"SIPp keeps exiting at start: {sipp.errors()}")


def log_lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


def iso_seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Node:
    """One `callkeeper ivr` process."""

    name: str
    config: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> Node:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "callkeeper.cli", "ivr", "--node", self.name),
                *("--config", str(self.config), "--listen", f"{NODE_HOST}:0"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        return self

    def events(self, name: str, **match: object) -> list[dict]:  # type: ignore[type-arg]
        return [
            e
            for e in log_lines(self.log_path)
            if e.get("event") == name and all(e.get(k) == v for k, v in match.items())
        ]

    def kill(self) -> float:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        killed = time.time()
        self.process.wait(10)
        return killed

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@dataclass
class Caller:
    sipp: Sipp
    count: int = 1
    sent: list[str] = field(default_factory=list)

    def call_id(self, number: int = 1) -> str:
        assert self.sipp.process is not None
        return f"ivrcaller-{number}-{self.sipp.process.pid}@127.0.0.1"

    def _tell(self, method: str, body: str, number: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            payload = body.encode()
            sock.sendto(
                (
                    f"{method} sip:caller@127.0.0.1:{self.sipp.port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-t{time.monotonic_ns()}\r\n"
                    "Max-Forwards: 70\r\nFrom: <sip:test@127.0.0.1>;tag=test\r\n"
                    f"To: <sip:caller@127.0.0.1>\r\nCall-ID: {self.call_id(number)}\r\n"
                    f"CSeq: 1 {method}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n"
                ).encode()
                + payload,
                ("127.0.0.1", self.sipp.port),
            )

    def press(self, keys: str, number: int = 1) -> None:
        for key in keys:
            self._tell("MESSAGE", f"press {key}", number)
            self.sent.append(key)
            time.sleep(0.15)  # keep the INFOs in order (each is its own transaction)

    def hang_up(self, number: int = 1) -> None:
        self._tell("PUBLISH", "", number)


@dataclass
class Stack:
    server: ServerProcess
    nodes: dict[str, Node]
    billing: Sipp
    workdir: Path
    callers: list[Sipp] = field(default_factory=list)

    def node_of_call(self, timeout: float = 10) -> Node:
        def answered() -> Node | None:
            for node in self.nodes.values():
                if node.events("ivr.answered"):
                    return node
            return None

        found: Node = wait_until(answered, timeout, what="an IVR node answering")
        return found

    def other(self, node: Node) -> Node:
        return next(n for n in self.nodes.values() if n is not node)

    def server_events(self, name: str) -> list[dict]:  # type: ignore[type-arg]
        return [e for e in log_lines(self.server.log_path) if e.get("event") == name]

    def caller(self, count: int = 1, rate: int = 10) -> Caller:
        args = ["-sf", str(SCENARIOS / "ivr_caller.xml"), "-s", "ivr", "-m", str(count)]
        args += ["-r", str(rate), "-l", str(count), "-cid_str", "ivrcaller-%u-%p@%s"]
        args += ["-timeout", "100"]
        target = f"127.0.0.1:{self.server.sip_port}"
        sipp = start_peer(lambda: Sipp(self.workdir, args, target=target, name="caller"))
        self.callers.append(sipp)
        return Caller(sipp, count)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    device = ["-sf", str(SCENARIOS / "recovery_device.xml"), "-timeout", "110"]
    billing = start_peer(lambda: Sipp(tmp_path, device, name="billing"))
    rtp = free_port()
    extra = (
        f"[keepalive]\nflow_timer = {FLOW_TIMER}\nmisses = {MISSES}\nin_call_interval = 1\n"
        "options_interval = 5\n"
        "[recovery]\ngrace = 5\nring_timeout = 5\n"
        f'[media]\nmode = "relay"\nrtp_ports = "{rtp}-{rtp + 199}"\n'
        '[log]\nformat = "json"\n'
        '[[users]]\nname = "ivr"\npassword = "ivr-secret"\n'
        f'[[users]]\nname = "billing"\nstatic_contacts = ["sip:billing@127.0.0.1:{billing.port}"]\n'
        f'[ivr]\nuser = "ivr"\nscript = "{SCRIPT}"\n'
    )
    server = ServerProcess(
        tmp_path,
        extra_config=extra,
        sip_extra='trusted_sources = ["127.0.0.1/32"]',
        transports=("udp",),
        store_url=f"sqlite:///{tmp_path / 'store.db'}",
    )
    server.start()
    nodes = {name: Node(name, server.config_path, tmp_path).start() for name in ("n1", "n2")}
    stack = Stack(server, nodes, billing, tmp_path)
    try:
        wait_until(
            lambda: (
                len([e for e in server.get_json("/api/v1/endpoints") if e["user"] == "ivr"]) == 2
            ),
            15,
            what="both IVR nodes registered",
        )
        yield stack
    finally:
        for sipp in stack.callers:
            sipp.stop()
        for node in nodes.values():
            node.stop()
        server.stop()
        billing.stop()


def wait_event(node: Node, name: str, timeout: float, **match: object) -> dict:  # type: ignore[type-arg]
    found: list[dict] = wait_until(  # type: ignore[type-arg]
        lambda: node.events(name, **match), timeout, what=f"{node.name}: {name} {match}"
    )
    return found[-1]


def enter_menu_choice(stack: Stack, caller: Caller) -> Node:
    first = stack.node_of_call()
    wait_event(first, "ivr.collect", 10, step="menu")
    caller.press("1")
    wait_event(first, "ivr.collect", 5, step="account")
    return first


def test_node_killed_after_two_account_digits(stack: Stack) -> None:
    sse = EventStream(stack.server)  # the call manager's own view: ivr.step / ivr.resumed
    caller = stack.caller()
    first = enter_menu_choice(stack, caller)
    # not a trusted source: the node answered the call manager's digest challenge
    assert first.events("ivr.registered")[0]["challenged"] is True
    caller.press("47")
    wait_event(first, "ivr.checkpoint", 5, step="account", digits="47")
    killed = first.kill()
    second = stack.other(first)
    resumed = wait_event(second, "ivr.resumed", DETECTION + 3, step="account")
    failover = iso_seconds(resumed["timestamp"]) - killed
    print(f"\nkilled after 2 digits: resumed on {second.name} {failover:.2f} s after kill -9")
    assert resumed["digits"] == "47"  # the 2 digits are kept
    assert failover <= DETECTION + 1.0
    assert wait_event(second, "ivr.collect", 3, step="account")["digits"] == "47"
    played = wait_until(
        lambda: [e for e in second.events("ivr.step", step="account") if e["resumed"]],
        3,
        what="the account step replayed",
    )
    assert played

    def ivr_leg() -> dict | None:  # type: ignore[type-arg]
        for call in stack.server.get_json("/api/v1/calls"):
            for leg in call["legs"]:
                if leg.get("ivr", {}).get("node") == second.name:
                    return leg  # type: ignore[no-any-return]
        return None

    leg = wait_until(ivr_leg, 5, what="the IVR session (step, node) in /api/v1/calls")
    assert leg["ivr"]["step"] == "account" and leg["session"] == leg["ivr"]["session"]
    moved_node = sse.wait("ivr.resumed", lambda d: d["node"] == second.name, timeout=5)
    assert moved_node["from_node"] == first.name and moved_node["step"] == "account"
    assert sse.all("ivr.step")  # the steps were reported as they happened
    sse.close()
    moved = wait_until(lambda: stack.server_events("call.transferred"), 5, what="call.transferred")
    assert moved[-1]["outcome"] == "transferred"
    caller.press("11")
    ended = wait_event(second, "ivr.ended", 10, reason="transferred")
    assert ended["transfer_target"] == "billing"
    assert ended["variables"]["account"] == "4711"
    assert ended["variables"]["note"] == "account 4711"
    assert "welcome" not in [e["step"] for e in second.events("ivr.step")]  # not restarted

    def on_billing() -> list[dict]:  # type: ignore[type-arg]
        calls = stack.server.get_json("/api/v1/calls")
        return [
            c
            for c in calls
            if c["state"] == "active" and "billing" in [leg.get("user") for leg in c["legs"]]
        ]

    wait_until(on_billing, 10, what="the caller connected to billing")
    caller.hang_up()
    assert caller.sipp.wait(15) == 0, caller.sipp.errors()


def test_node_killed_mid_prompt(stack: Stack) -> None:
    caller = stack.caller()
    first = enter_menu_choice(stack, caller)
    wait_event(first, "ivr.checkpoint", 5, step="account", phase="prompting")
    time.sleep(1.0)  # the 5 s account prompt is playing: kill the node in the middle of it
    assert not first.events("ivr.collect_failed")
    killed = first.kill()
    second = stack.other(first)
    resumed = wait_event(second, "ivr.resumed", DETECTION + 3, step="account")
    failover = iso_seconds(resumed["timestamp"]) - killed
    print(f"\nkilled mid-prompt: resumed on {second.name} {failover:.2f} s after kill -9")
    assert failover <= DETECTION + 1.0
    assert resumed["digits"] == "" and resumed["prompt_offset"] == 0.0  # replayed from start
    caller.press("0000")
    ended = wait_event(second, "ivr.ended", 15, reason="caller done")
    assert ended["variables"]["account"] == "0000"
    steps = [e["step"] for e in second.events("ivr.step")]
    assert steps[:1] == ["account"] and "unknown_account" in steps and "welcome" not in steps
    assert caller.sipp.wait(15) == 0, caller.sipp.errors()  # the IVR's BYE ended the call


def test_node_stopped_with_sigterm_hands_its_callers_over(stack: Stack) -> None:
    caller = stack.caller()
    first = enter_menu_choice(stack, caller)
    caller.press("47")
    wait_event(first, "ivr.checkpoint", 5, step="account", digits="47")
    stopped = time.time()
    assert first.process is not None
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(10) == 0
    assert first.events("ivr node stopped")
    second = stack.other(first)
    resumed = wait_event(second, "ivr.resumed", 5, step="account")
    handover = iso_seconds(resumed["timestamp"]) - stopped
    print(f"\nSIGTERM: resumed on {second.name} {handover:.2f} s after the signal")
    assert resumed["digits"] == "47" and handover < 2.0  # de-registered: no detection delay
    caller.press("11")
    ended = wait_event(second, "ivr.ended", 10, reason="transferred")
    assert ended["variables"]["account"] == "4711"
    caller.hang_up()
    assert caller.sipp.wait(15) == 0, caller.sipp.errors()
