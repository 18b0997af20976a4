"""Dialog audit between real SIPp peers: a call one side forgot is found and ended.

SIPp caller (trusted source, not monitored) → callkeeper → SIPp `-sn uas -aa` (bob's static
contact; `-aa` answers in-dialog OPTIONS 200, as phones do). T1 is cut to 50 ms so that an
unanswered audit gives up (64·T1) in 3.2 s instead of 32 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import ServerProcess, wait_until
from support.sipp import SCENARIOS, Sipp

AUDIT_INTERVAL = 0.5
T1 = 0.05
TIMER_F = 64 * T1


@pytest.fixture
def uas(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path / "uas", ["-sn", "uas", "-aa"], name="uas") as sipp:
        yield sipp


@pytest.fixture
def server(tmp_path: Path, uas: Sipp) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "ck",
        sip_extra=f'trusted_sources = ["127.0.0.1/32"]\nt1 = {T1}\n',
        extra_config=(
            f"[keepalive]\ndialog_interval = {AUDIT_INTERVAL}\n"
            # bob's out-of-dialog probes would be unexpected calls to the uas: only audits here
            "options_interval = 3600\nin_call_interval = 3600\n"
            f'[[users]]\nname = "bob"\nstatic_contacts = ["sip:bob@127.0.0.1:{uas.port}"]\n'
        ),
        transports=("udp",),
    )
    with process:
        yield process


def call_with(tmp_path: Path, server: ServerProcess, scenario: str) -> float:
    """One call from a caller running `scenario`; when it was answered (monotonic)."""
    caller = Sipp(
        tmp_path / "caller",
        ["-sf", str(SCENARIOS / scenario), "-s", "bob", "-m", "1", "-recv_timeout", "10000"],
        target=f"127.0.0.1:{server.sip_port}",
        name="caller",
    ).start()
    wait_until(lambda: server.metric("callkeeper_calls_active") == 1, 10, what="the call")
    answered = time.monotonic()
    assert caller.wait(timeout=20) == 0, caller.errors()
    return answered


def audits(server: ServerProcess, result: str) -> float:
    return server.metric(f'callkeeper_dialog_audits_total{{result="{result}"}}')


def test_a_caller_that_answers_481_is_let_go_and_the_callee_gets_a_bye(
    tmp_path: Path, server: ServerProcess, uas: Sipp
) -> None:
    answered = call_with(tmp_path, server, "caller_forgets.xml")
    wait_until(lambda: server.metric("callkeeper_calls_active") == 0, 5, what="the call to end")
    ended = time.monotonic() - answered
    print(f"call ended {ended:.2f} s after it was answered (audit every {AUDIT_INTERVAL} s)")
    assert ended < AUDIT_INTERVAL + 2.0
    assert audits(server, "gone") == 1
    # The uas's built-in scenario completes only with a BYE: the callee was hung up properly.
    wait_until(lambda: uas.stats().successful == 1, 5, what="the callee's BYE")
    assert uas.stats().failed == 0


def test_a_call_both_sides_forgot_is_ended_once_the_silent_caller_times_out(
    tmp_path: Path, server: ServerProcess, uas: Sipp
) -> None:
    answered = call_with(tmp_path, server, "caller_goes_quiet.xml")
    wait_until(
        lambda: server.metric("callkeeper_calls_active") == 0,
        AUDIT_INTERVAL + TIMER_F + 5,
        what="the forgotten call to end",
    )
    ended = time.monotonic() - answered
    print(f"forgotten call ended {ended:.2f} s after it was answered")
    assert ended >= TIMER_F  # not before the caller had its whole transaction to answer
    assert audits(server, "silent") >= 1 and audits(server, "alive") >= 1
    wait_until(lambda: uas.stats().successful == 1, 5, what="the callee's BYE")
    assert server.metric("callkeeper_core_errors_total") == 0
