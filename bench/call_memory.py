"""Memory per established call: callkeeper vs sippy's b2bua_simple, 2,000 concurrent calls.

For each middlebox in turn (pinned to CPU 0, SIPp to CPU 1): a warm-up of 200 short calls, then
its RSS and PSS (/proc/PID/smaps_rollup, summed over its processes) at rest; then SIPp places
`--calls` calls at `--rate` calls/s (`-l` = calls) that each hold for `--hold` seconds (`-d`). Once
all of them are established — callkeeper_calls_active == calls for callkeeper; for the others
SIPp's CurrentCall == calls on both the caller and the callee — RSS/PSS are sampled again, and
(with - before) / calls is the memory per call ("set-up": it still holds the 64*T1 = 32 s tail of
every INVITE transaction). A second sample once those transactions expired (callkeeper's
callkeeper_sip_transactions down to the liveness probes' few, SETTLED_TRANSACTIONS; `--settle` s
for the others) gives the "settled" figure; Python rarely hands freed memory back to the OS, so
that one mostly shows reuse, not a smaller peak.
The calls then end cleanly: SIPp sends each call's BYE when its `-d` pause expires, and the
script waits for that and checks that none is left open.

sippy (and Kamailio, `--systems callkeeper,sippy,kamailio`) is driven by bench/sipp/uac_tolerant.xml,
which ignores a 180 that arrives after its 200 (see b2bua_bench.py); callkeeper by `-sn uac`.

    python bench/call_memory.py [--calls 2000] [--rate 200] [--hold 120] [--systems callkeeper,sippy]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from b2bua_bench import run_step
from middleboxes import (
    LABELS,
    STARTERS,
    Middlebox,
    error_lines,
    memory_kb,
    missing,
    raise_socket_buffers,
    start_sipp,
    stat,
)

WARMUP_RATE, WARMUP_SECONDS = 100, 2.0
# Never 0: the liveness monitor keeps probing bob's static contact (an OPTIONS transaction or two
# at any time), while the calls' set-up transactions number thousands until they expire.
SETTLED_TRANSACTIONS = 4


@dataclass
class Measurement:
    name: str
    calls: int
    rss_before: int = 0
    pss_before: int = 0
    rss_with: int = 0
    pss_with: int = 0
    rss_settled: int = 0
    pss_settled: int = 0
    settled_after: float = 0.0
    rss_after: int = 0
    pss_after: int = 0
    established: int = 0
    setup_seconds: float = 0.0
    successful: int = 0
    failed: int = 0
    left_open: int = 0
    ending: str = ""
    note: str = ""

    @property
    def kb_per_call_pss(self) -> float:
        return (self.pss_with - self.pss_before) / self.established if self.established else 0.0

    @property
    def kb_per_call_rss(self) -> float:
        return (self.rss_with - self.rss_before) / self.established if self.established else 0.0

    @property
    def kb_per_call_settled(self) -> float:
        if not self.established or not self.pss_settled:
            return 0.0
        return (self.pss_settled - self.pss_before) / self.established


def sample(box: Middlebox, count: int = 3, interval: float = 1.0) -> tuple[int, int]:
    """Median (RSS, PSS) in KB of `count` samples."""
    rss, pss = [], []
    for index in range(count):
        if index:
            time.sleep(interval)
        r, p = memory_kb(box.pids())
        rss.append(r)
        pss.append(p)
    return int(statistics.median(rss)), int(statistics.median(pss))


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def transactions_left(box: Middlebox) -> float:
    """callkeeper's live SIP transactions; infinite while /metrics does not answer."""
    count = box.metric("callkeeper_sip_transactions")
    return float("inf") if count is None else count


def measure(
    box: Middlebox, calls: int, rate: int, hold: float, settle: float, workdir: Path
) -> Measurement:
    result = Measurement(box.name, calls)
    warmup = run_step(box, WARMUP_RATE, WARMUP_SECONDS, workdir)
    if not warmup.clean:
        result.note = f"warm-up not clean: {warmup.describe()}"
    time.sleep(2.0)
    result.rss_before, result.pss_before = sample(box)

    caller = start_sipp(
        workdir,
        f"{box.name}-long-calls",
        box.caller,
        ["-s", "bob", "-r", str(rate), "-m", str(calls), "-l", str(calls),
         "-d", str(int(hold * 1000)), "-recv_timeout", "10000"],
        target=box.target,
    )  # fmt: skip
    started = time.monotonic()

    def established() -> int:
        if box.api_port is not None:
            return int(box.metric("callkeeper_calls_active") or 0)
        # Both legs are up once the caller and the callee each hold every call.
        return min(stat(caller.stats(), "CurrentCall"), stat(box.uas.stats(), "CurrentCall"))

    setup_budget = calls / rate + 30.0
    wait_until(lambda: established() >= calls or caller.process.poll() is not None, setup_budget)
    result.setup_seconds = time.monotonic() - started
    result.established = established()
    if result.established < calls:
        result.note += f" only {result.established} of {calls} calls established;"
    time.sleep(1.0)
    result.rss_with, result.pss_with = sample(box)
    if result.setup_seconds + 5 > hold:
        result.note += " calls began to end before the sample (raise --hold);"
    # Again once the call set-up transactions have expired (RFC 3261/6026 keep them 64*T1 = 32 s
    # after the final response): what an established call costs while it lasts.
    if result.setup_seconds + settle + 10 < hold:
        settling = time.monotonic()
        if box.api_port is not None:
            wait_until(lambda: transactions_left(box) <= SETTLED_TRANSACTIONS, settle)
        else:
            time.sleep(settle)
        result.settled_after = time.monotonic() - settling
        result.rss_settled, result.pss_settled = sample(box)

    # End: every call's -d pause expires and SIPp sends its BYE; SIPp exits after the last one.
    try:
        caller.process.wait(hold + calls / rate + 90.0)
        result.ending = "SIPp sent each call's BYE when -d expired"
    except subprocess.TimeoutExpired:
        caller.stop()
        result.ending = "SIPp did not finish in time: stopped with SIGTERM (calls left to time out)"
    values = caller.stats()
    result.successful = stat(values, "SuccessfulCall(C)")
    result.failed = stat(values, "FailedCall(C)")
    if result.failed:
        result.note += " " + " | ".join(error_lines(caller.error_file, limit=2))
    wait_until(lambda: stat(box.uas.stats(), "CurrentCall") == 0, 15.0)
    if box.api_port is not None:
        wait_until(lambda: box.metric("callkeeper_calls_active") == 0, 10.0)
        result.left_open = int(box.metric("callkeeper_calls_active") or 0)
    else:
        result.left_open = stat(box.uas.stats(), "CurrentCall")
    result.rss_after, result.pss_after = memory_kb(box.pids())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--hold", type=float, default=120.0, help="seconds each call lasts (-d)")
    parser.add_argument(
        "--settle", type=float, default=40.0, help="seconds for set-up transactions to expire"
    )
    parser.add_argument("--systems", default="callkeeper,sippy")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    print(raise_socket_buffers(), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="call-memory-"))
    results: dict[str, Measurement] = {}
    print(
        f"{args.calls} concurrent calls set up at {args.rate}/s, each held {args.hold:g} s; "
        f"work directory {workdir}",
        flush=True,
    )
    for name in [n.strip() for n in args.systems.split(",") if n.strip()]:
        reason = missing(name)
        if reason is not None:
            print(f"{LABELS.get(name, name)}: skipped ({reason})", flush=True)
            continue
        try:
            box = STARTERS[name](workdir)
        except (RuntimeError, OSError) as error:
            print(f"{LABELS.get(name, name)}: did not start ({error})", flush=True)
            continue
        try:
            result = measure(box, args.calls, args.rate, args.hold, args.settle, workdir)
        finally:
            box.stop()
        results[name] = result
        print(
            f"{LABELS[name]:<26} established {result.established} in {result.setup_seconds:.1f} s; "
            f"PSS {result.pss_before} -> {result.pss_with} KB ({result.kb_per_call_pss:.1f} KB/call)"
            f", {result.settled_after:.0f} s later {result.pss_settled} KB "
            f"({result.kb_per_call_settled:.1f} KB/call); after the calls: RSS {result.rss_after} KB,"
            f" PSS {result.pss_after} KB; {result.successful} ok, {result.failed} failed, "
            f"{result.left_open} left open; {result.ending}.{result.note}",
            flush=True,
        )
    summarize(results, args.calls)
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


def summarize(results: dict[str, Measurement], calls: int) -> None:
    print(
        f"\nMemory per established call ({calls} concurrent calls; KB, summed over the middlebox's"
        " processes; before = at rest after a warm-up; set-up = right after the last call was"
        " answered; settled = once the set-up transactions expired):"
    )
    print(
        f"  {'middlebox':<26} {'RSS before':>10} {'RSS set-up':>10} {'PSS before':>10} "
        f"{'PSS set-up':>10} {'PSS settled':>11} {'KB/call set-up':>14} {'KB/call settled':>15}"
    )
    for name, m in results.items():
        print(
            f"  {LABELS[name]:<26} {m.rss_before:>10} {m.rss_with:>10} {m.pss_before:>10} "
            f"{m.pss_with:>10} {m.pss_settled:>11} {m.kb_per_call_pss:>14.1f} "
            f"{m.kb_per_call_settled:>15.1f}"
        )
    ck, sippy = results.get("callkeeper"), results.get("sippy")
    if ck is not None:
        worst = max(ck.kb_per_call_pss, ck.kb_per_call_settled)
        verdict = "meets" if 0 < worst <= 10.0 else "misses"
        print(
            f"callkeeper: {ck.kb_per_call_pss:.1f} KB/call at set-up, {ck.kb_per_call_settled:.1f}"
            f" settled ({verdict} the target <= 10 KB)"
        )
    if ck is not None and sippy is not None and sippy.kb_per_call_pss > 0:
        print(
            f"callkeeper / sippy memory per call = {ck.kb_per_call_pss / sippy.kb_per_call_pss:.2f}"
            " at set-up  (sippy: about 19 KB expected)"
        )


if __name__ == "__main__":
    sys.exit(main())
