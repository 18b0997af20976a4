"""How long a call takes to reach the second DNS target (RFC 3263 §4.3 failover).

    python bench/dns_failover_bench.py [--calls 5] [direct 503 tcp-refused timeout]

Real processes on loopback: `callkeeper serve` with a trunk `sip:pbx.test`, dnsmasq serving its
SRV records (a first target at priority 0, a second at priority 10), a SIPp uas as the second
target. The first target is, per case: absent (`direct`, one SRV record: the baseline); a SIPp
answering 503 without Retry-After (`503`); a TCP port nobody listens on, trunk over TCP
(`tcp-refused`); a UDP port nobody listens on, with `t1 = 0.05` so Timer B is 3.2 s
(`timeout`). A UDP caller (tests/support/ua.py) sends the INVITE; printed: the time from it to
the caller's 200 (median, min, max over `--calls` calls) and `callkeeper_dns_failovers_total`.
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

from support.dnsmasq import Dnsmasq, host_record, srv_record  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.server import ServerProcess  # noqa: E402
from support.sipp import SCENARIOS, Sipp  # noqa: E402
from support.ua import SDP_OFFER, UdpAgent  # noqa: E402

CASES = ("direct", "503", "tcp-refused", "timeout")


def srv_records(ports: list[int], transport: str) -> list[str]:
    records = []
    for index, port in enumerate(ports):
        target = f"t{index}.test"
        records.append(srv_record(f"_sip._{transport}.pbx.test", target, port, priority=10 * index))
        records.append(host_record(target))
    return records


def first_target(case: str, workdir: Path) -> tuple[Sipp | None, list[int]]:
    """The first target's SIPp (None when nothing listens) and its port ([] for `direct`)."""
    if case == "direct":
        return None, []
    if case != "503":
        return None, [free_port()]
    scenario = workdir / "unavailable_no_retry.xml"
    text = (SCENARIOS / "unavailable_503.xml").read_text()
    scenario.write_text(
        "".join(line for line in text.splitlines(True) if "Retry-After" not in line)
    )
    sipp = Sipp(workdir / "down", ["-sf", str(scenario)], name="down").start()
    return sipp, [sipp.port]


def setup_times(server: ServerProcess, calls: int) -> list[float]:
    times = []
    for number in range(calls):
        with UdpAgent(server.sip_port, user="alice") as agent:
            uri = f"sip:555{number}@127.0.0.1:{server.sip_port}"
            data, call_id, from_tag, branch = agent.request("INVITE", uri, body=SDP_OFFER)
            start = time.monotonic()
            agent.send(data)
            response = agent.final_response(call_id, "INVITE", timeout=10)
            times.append(time.monotonic() - start)
            if response is None or response.status != 200:
                raise SystemExit(f"call {number}: {response.status if response else 'no answer'}")
            agent.ack(uri, call_id, from_tag, response.to_tag, branch=branch)
    return times


def run(case: str, calls: int, workdir: Path) -> None:
    transport = "tcp" if case == "tcp-refused" else "udp"
    down, first = first_target(case, workdir)
    try:
        with Sipp(workdir / "uas", ["-sn", "uas"], transport=transport, name="uas") as uas:
            records = srv_records([*first, uas.port], transport)
            with Dnsmasq(workdir / "dns", records) as dns:
                trunk = "sip:pbx.test;transport=tcp" if transport == "tcp" else "sip:pbx.test"
                extra = (
                    f'[dns]\nservers = ["{dns.server}"]\nmin_ttl = 1\ntimeout = 1.0\n'
                    f'[[trunks]]\nname = "pbx"\nuri = "{trunk}"\n'
                )
                sip = 'trusted_sources = ["127.0.0.1/32"]\n'
                if case == "timeout":
                    sip += "t1 = 0.05\n"
                env = {"PYTHONPATH": str(ROOT / "src")}
                with ServerProcess(
                    workdir / "ck", sip_extra=sip, extra_config=extra, env=env
                ) as server:
                    times = setup_times(server, calls)
                    failovers = server.metric("callkeeper_dns_failovers_total")
    finally:
        if down is not None:
            down.stop()
    print(
        f"{case:12} INVITE->200 ms: median {1000 * statistics.median(times):8.1f}  "
        f"min {1000 * min(times):8.1f}  max {1000 * max(times):8.1f}  failovers {failovers:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    for case in args.cases or CASES:
        with tempfile.TemporaryDirectory() as workdir:
            run(case, args.calls, Path(workdir))


if __name__ == "__main__":
    main()
