"""IVR failover at load: N concurrent callers in the IVR, the node they are on killed with -9.

    python bench/ivr_bench.py [--calls 100] [--rate 50]

Real processes on loopback: `callkeeper serve` (media relay, SQLite store shared with the nodes),
IVR node n1, a SIPp caller scenario (tests/scenarios/ivr_caller.xml) placing N calls, and a SIPp
`billing` device. Every caller presses 1 and 2 of 4 account digits on n1 (SIP INFO); then node
n2 starts and n1 is killed. Expected: all N sessions resume on n2 at the account step with their
2 digits (none lost, none restarted from the first step); then each caller enters the last 2
digits and is transferred to billing. Printed: resume latency after the kill (p50/p99/max) and
the counts. Exit status 1 when a count is wrong.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from support.server import ServerProcess, wait_until  # noqa: E402
from support.sipp import SCENARIOS, Sipp  # noqa: E402
from test_ivr_failover import SCRIPT, Caller, Node, iso_seconds, start_peer  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def press_all(caller: Caller, key: str, count: int) -> None:
    for number in range(1, count + 1):
        caller._tell("MESSAGE", f"press {key}", number)
        time.sleep(0.002)


def count(node: Node, name: str, **match: object) -> int:
    return len({e.get("call") or e.get("session") for e in node.events(name, **match)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=int, default=50)
    args = parser.parse_args()
    calls = args.calls
    workdir = Path(tempfile.mkdtemp(prefix="ivr-bench-"))
    device = ["-sf", str(SCENARIOS / "recovery_device.xml"), "-timeout", "300"]
    billing = start_peer(lambda: Sipp(workdir, device, name="billing"))
    extra = (
        "[keepalive]\nflow_timer = 1\nmisses = 3\nin_call_interval = 1\noptions_interval = 5\n"
        "[recovery]\ngrace = 5\nring_timeout = 10\n"
        '[media]\nmode = "relay"\nrtp_ports = "42000-43999"\n'
        '[log]\nformat = "json"\n'
        '[[users]]\nname = "ivr"\npassword = "ivr-secret"\n'
        f'[[users]]\nname = "billing"\nstatic_contacts = ["sip:billing@127.0.0.1:{billing.port}"]\n'
        f'[ivr]\nuser = "ivr"\nscript = "{SCRIPT}"\n'
    )
    server = ServerProcess(
        workdir,
        extra_config=extra,
        sip_extra='trusted_sources = ["127.0.0.1/32"]',
        transports=("udp",),
        store_url=f"sqlite:///{workdir / 'store.db'}",
    ).start()
    n1 = Node("n1", server.config_path, workdir).start()
    n2 = Node("n2", server.config_path, workdir)
    caller: Caller | None = None
    ok = True
    try:
        wait_until(lambda: n1.events("ivr.registered"), 15, what="n1 registered")
        sipp_args = ["-sf", str(SCENARIOS / "ivr_caller.xml"), "-s", "ivr", "-m", str(calls)]
        sipp_args += ["-r", str(args.rate), "-l", str(calls), "-cid_str", "ivrcaller-%u-%p@%s"]
        sipp_args += ["-timeout", "200"]
        target = f"127.0.0.1:{server.sip_port}"
        sipp = start_peer(lambda: Sipp(workdir, sipp_args, target=target, name="caller"))
        caller = Caller(sipp, calls)
        wait_until(lambda: count(n1, "ivr.collect", step="menu") >= calls, 60, what="menus")
        press_all(caller, "1", calls)
        wait_until(lambda: count(n1, "ivr.collect", step="account") >= calls, 30, what="accounts")
        for key in "47":
            press_all(caller, key, calls)
            time.sleep(0.3)
        wait_until(
            lambda: count(n1, "ivr.checkpoint", step="account", digits="47") >= calls,
            30,
            what="2 digits checkpointed",
        )
        n2.start()
        wait_until(lambda: n2.events("ivr.registered"), 15, what="n2 registered")
        time.sleep(1.0)  # n2 alive in the call manager's eyes
        killed = n1.kill()
        print(f"{calls} callers on n1 with 2 of 4 digits; n1 killed (kill -9)")
        wait_until(lambda: count(n2, "ivr.resumed") >= calls, 60, what="all resumed on n2")
        resumed = n2.events("ivr.resumed")
        latencies = [iso_seconds(e["timestamp"]) - killed for e in resumed]
        kept = sum(1 for e in resumed if e["step"] == "account" and e["digits"] == "47")
        restarted = len(n2.events("ivr.session_restarted"))
        from_start = sum(1 for e in n2.events("ivr.step") if e["step"] == "welcome")
        print(
            f"resumed on n2: {len(resumed)}/{calls}, at the account step with 2 digits: {kept}, "
            f"restarted: {restarted}, back at the first step: {from_start}"
        )
        print(
            f"resume after kill -9: p50 {statistics.median(latencies):.2f} s, "
            f"p99 {percentile(latencies, 0.99):.2f} s, max {max(latencies):.2f} s "
            "(detection = flow_timer 1 s x misses 3 + 0.5 s)"
        )
        for key in "11":
            press_all(caller, key, calls)
            time.sleep(0.3)
        wait_until(
            lambda: count(n2, "ivr.ended", reason="transferred") >= calls, 60, what="transfers"
        )
        right = sum(
            1
            for e in n2.events("ivr.ended", reason="transferred")
            if e["variables"].get("account") == "4711" and e["transfer_target"] == "billing"
        )
        lost = len([line for line in server.log().splitlines() if '"call.lost"' in line])
        print(f"reached billing with account 4711: {right}/{calls}; calls lost: {lost}")
        ok = len(resumed) == calls == kept == right and restarted == from_start == lost == 0
        for number in range(1, calls + 1):
            caller.hang_up(number)
            time.sleep(0.002)
        caller.sipp.wait(60)
        stats = caller.sipp.stats()
        print(f"SIPp callers: {stats.successful} successful, {stats.failed} failed")
        ok = ok and stats.successful == calls
    finally:
        if caller is not None:
            caller.sipp.stop()
        for node in (n1, n2):
            if node.process is not None:
                node.stop()
        server.stop()
        billing.stop()
    print("OK" if ok else "FAILED", f"(logs in {workdir})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
