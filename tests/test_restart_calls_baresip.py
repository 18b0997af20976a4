"""A call survives a crash or a restart of callkeeper itself, on the same store.

Real baresip phones, the real `callkeeper serve`, the SQLite store (the embedded default) and the
built-in relay. bob calls alice; callkeeper is SIGKILLed once the call's snapshot is on disk
(a crash), or SIGTERMed at once (an upgrade: it writes what it has not written yet), and started
again on the same ports and store. The phones never notice anything but a gap in the
audio: the call is listed again, the relay takes its old ports back so each phone hears the
other again, and bob's hang-up reaches alice in her own dialog (without the snapshot it would
be answered 481 and alice would stay in a dead call).
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from support.audio import Recording, active_duration, dominant_frequency, read_wav
from support.baresip import Baresip
from support.server import wait_until
from test_recovery_baresip import assert_tone, dump_logs, establish, the_call, wait_registered
from test_relay_baresip import PASSWORDS, TONES, RelayServer, relay_server

pytestmark = pytest.mark.peers

TALK = 2.0  # s before the crash, and again after the restart


def stored_calls(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
        try:
            row = db.execute("SELECT count(*) FROM entries WHERE namespace = 'calls'").fetchone()
        except sqlite3.OperationalError:  # the table is not there yet
            return 0
    return int(row[0])


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_call_outlives_a_restart_of_callkeeper(tmp_path: Path, how: signal.Signals) -> None:
    first = relay_server(tmp_path)
    database = first.workdir / "data" / "callkeeper.db"
    first.store_url = f"sqlite:///{database}"
    first.start()
    second: RelayServer | None = None
    bob, alice = (
        Baresip(
            tmp_path / name, name, first.sip_port, PASSWORDS[name], tone_hz=TONES[name], regint=600
        )
        for name in ("bob", "alice")
    )
    try:
        with bob, alice:
            assert bob.ctl is not None and alice.ctl is not None
            wait_registered(first, bob, alice)
            establish(first, bob, alice)
            established = time.monotonic()
            before = the_call(first)
            if how is signal.SIGKILL:
                time.sleep(TALK)
                wait_until(lambda: stored_calls(database) == 1, 5, what="the snapshot on disk")
            else:
                assert stored_calls(database) == 0  # not yet: SIGTERM has it written

            assert first.process is not None
            killed = time.monotonic()
            first.process.send_signal(how)
            assert first.process.wait(10) == (0 if how is signal.SIGTERM else -signal.SIGKILL)
            second = RelayServer(
                first.workdir,
                extra_config=first.extra_config,
                sip_port=first.sip_port,
                api_port=first.api_port,
                store_url=first.store_url,
                rtp_range=first.rtp_range,
            )
            second.start()
            serving = time.monotonic()
            after = the_call(second)
            print(f"{how.name} → serving again in {serving - killed:.2f} s; call {after['id']}")
            assert after["id"] == before["id"] and after["state"] == "active", after
            assert {leg["user"] for leg in after["legs"]} == {"alice", "bob"}
            metrics = second.metrics()
            assert metrics["callkeeper_media_sides"] == 2, metrics
            assert metrics["callkeeper_calls_restored_total"] == 1, metrics

            time.sleep(TALK)
            bob.ctl.hangup()
            bob.ctl.wait_event("CALL_CLOSED", 5)
            closed = alice.ctl.wait_event("CALL_CLOSED", 5)  # the BYE reached her dialog
            print(f"alice's call closed: {closed.get('param')}")
            call_seconds = time.monotonic() - established
            outage = serving - killed
            wait_until(lambda: second is not None and second.get_json("/api/v1/calls") == [],
                       5, what="the call to end")  # fmt: skip
            wait_until(lambda: stored_calls(database) == 0, 5, what="the snapshot deleted")
            assert second.metric('callkeeper_call_snapshots_total{op="delete"}') == 1
            _assert_heard_again(bob, alice, call_seconds, outage)
    except AssertionError as error:
        servers = [s for s in (first, second) if s is not None]
        raise AssertionError(f"{error}\n{dump_logs(bob, alice, *servers)}") from None
    finally:
        for server in (first, second):
            if server is not None and server.process is not None and server.process.poll() is None:
                server.stop()


def _assert_heard_again(bob: Baresip, alice: Baresip, call_seconds: float, outage: float) -> None:
    """Each phone's one recording: the other's tone before the crash and again after it; the
    silence in between is about as long as callkeeper was away."""
    for listener, speaker in ((bob, "alice"), (alice, "bob")):
        (dump,) = listener.wav_files("dec")  # one recording: the call never stopped for them
        recording = read_wav(dump)
        last = Recording(recording.rate, recording.samples[-int(1.5 * recording.rate) :])
        assert_tone(dominant_frequency(last), TONES[speaker], f"{listener.name} after the restart")
        loud = active_duration(recording)
        gap = call_seconds - loud
        print(
            f"{listener.name} heard {speaker}'s tone for {loud:.2f} s of a {call_seconds:.2f} s "
            f"call: {gap:.2f} s of silence for a {outage:.2f} s outage"
        )
        assert active_duration(last) >= 1.4, "the tone is back for good"
        assert gap <= outage + 1.0, (gap, outage)
