"""Liveness against real peers: a baresip phone's STUN keep-alives (RFC 5626 outbound, UDP), its
TCP connection, and a SIPp device that only answers OPTIONS probes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.baresip import Baresip, baresip_binary
from support.server import ServerProcess, wait_until
from support.sipp import SCENARIOS, Sipp

FLOW_TIMER = 5
MISSES = 2
OPTIONS_INTERVAL = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    baresip_binary()
    config = (
        f"[keepalive]\nflow_timer = {FLOW_TIMER}\nmisses = {MISSES}\n"
        f"options_interval = {OPTIONS_INTERVAL}\nin_call_interval = 1\n"
        '[[users]]\nname = "alice"\npassword = "alice-pw"\n'
    )
    with ServerProcess(tmp_path_factory.mktemp("liveness"), extra_config=config) as process:
        yield process


def endpoint(server: ServerProcess, user: str) -> dict[str, Any] | None:
    found = [e for e in server.get_json("/api/v1/endpoints") if e["user"] == user]
    return found[0] if found else None


def state_is(server: ServerProcess, user: str, state: str) -> dict[str, Any] | None:
    found = endpoint(server, user)
    return found if found is not None and found["state"] == state else None


def test_udp_outbound_phone_frozen_goes_down_and_comes_back(
    server: ServerProcess, tmp_path: Path
) -> None:
    with Baresip(
        tmp_path / "alice", "alice", server.sip_port, "alice-pw", transport="udp"
    ) as phone:
        wait_until(lambda: state_is(server, "alice", "alive"), 10, what="alice registered")
        stun = 'callkeeper_keepalives_total{kind="stun"}'
        wait_until(lambda: server.metric(stun) >= 1, FLOW_TIMER + 3, what="a STUN keep-alive")
        assert phone.process is not None
        phone.process.send_signal(signal.SIGSTOP)
        stopped = time.time()
        try:
            down = wait_until(lambda: state_is(server, "alice", "down"), FLOW_TIMER * MISSES + 3,
                              interval=0.05, what="alice down")  # fmt: skip
            detected = time.time()
            bound = FLOW_TIMER * MISSES + 1
            assert detected - down["last_seen"] <= bound + 0.2, (detected, down)
            assert detected - stopped <= bound + 0.2
            print(
                f"\nudp/stun: down {detected - down['last_seen']:.2f} s after the last keep-alive "
                f"(bound {bound} s), {detected - stopped:.2f} s after SIGSTOP"
            )
        finally:
            phone.process.send_signal(signal.SIGCONT)
        resumed = time.time()
        alive = wait_until(lambda: state_is(server, "alice", "alive"), FLOW_TIMER + 2,
                           interval=0.05, what="alice alive again")  # fmt: skip
        # alive as soon as its next keep-alive arrives (it is overdue, so it comes at once)
        assert alive["last_seen"] >= resumed - 0.1
        assert time.time() - alive["last_seen"] <= 1.0
        print(f"udp/stun: alive again {alive['last_seen'] - resumed:.2f} s after SIGCONT")
    failures = server.metric("callkeeper_endpoint_failures_total")
    assert failures >= 1
    assert server.metric("callkeeper_detection_seconds_count") >= 1


def test_tcp_phone_killed_goes_down_at_once(server: ServerProcess, tmp_path: Path) -> None:
    with Baresip(
        tmp_path / "alice-tcp", "alice", server.sip_port, "alice-pw", transport="tcp"
    ) as phone:
        wait_until(lambda: any(e["transport"] == "tcp" and e["state"] == "alive"
                               for e in server.get_json("/api/v1/endpoints") if e["user"] == "alice"),
                   10, what="alice registered over tcp")  # fmt: skip
        assert phone.process is not None
        phone.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()

        def tcp_down() -> bool:
            return any(e["transport"] == "tcp" and e["state"] == "down"
                       for e in server.get_json("/api/v1/endpoints") if e["user"] == "alice")  # fmt: skip

        wait_until(tcp_down, 2, interval=0.01, what="tcp endpoint down")
        elapsed = time.monotonic() - killed
        print(f"\ntcp: down {elapsed * 1000:.0f} ms after kill -9")
        assert elapsed < 0.2


def test_options_probed_device_goes_down_when_it_stops_answering(tmp_path: Path) -> None:
    with Sipp(
        tmp_path / "device", ["-sf", str(SCENARIOS / "uas_options.xml")], name="device"
    ) as device:
        config = (
            f"[keepalive]\noptions_interval = {OPTIONS_INTERVAL}\nmisses = {MISSES}\n"
            f'[[users]]\nname = "desk"\nstatic_contacts = ["sip:desk@127.0.0.1:{device.port}"]\n'
        )
        with ServerProcess(tmp_path / "ck", extra_config=config) as server:
            alive = wait_until(lambda: (e := endpoint(server, "desk")) and e["last_seen"] and e,
                               OPTIONS_INTERVAL * 2 + 2, what="a probe answered")  # fmt: skip
            assert alive["state"] == "alive"
            assert device.process is not None
            device.process.send_signal(signal.SIGKILL)
            device.process.wait(5)
            down = wait_until(lambda: state_is(server, "desk", "down"),
                              OPTIONS_INTERVAL * MISSES + 4, interval=0.05, what="desk down")  # fmt: skip
            latency = time.time() - down["last_seen"]
            print(
                f"\noptions: down {latency:.2f} s after the last answer (bound {OPTIONS_INTERVAL * MISSES + 1} s)"
            )
            assert latency <= OPTIONS_INTERVAL * MISSES + 1 + 0.2
