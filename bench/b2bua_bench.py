"""Calls/s through a B2BUA with 0 failed calls and 0 retransmissions: callkeeper vs sippy vs Kamailio.

SIPp uac -> middlebox -> SIPp uas, calls of ~100 ms (INVITE/180/200/ACK, `-d 100`, BYE/200). The
middleboxes (callkeeper; sippy 2.5.0's b2bua_simple; Kamailio as a stateful proxy with the dialog
module, `-m 256`) run side by side in the same run, each with its own SIPp callee, and take turns at
every rate step (the machine is shared and noisy, so the baselines are measured in the same run).
Each middlebox is pinned to CPU 0, every SIPp to CPU 1; `--cpus shared` pins nothing, the
conditions under which ../shared/peers/README.md measured its baselines.

A step passes when every call succeeded at the caller, SIPp retransmitted nothing on either side,
and the callee finished every call (it got the BYE). A failing step is run once more (`--retries`)
before the middlebox drops out; its maximum is the last rate that passed. CPU is the middlebox's own
utime+stime from /proc during the step (percent of one core).

callkeeper is driven by SIPp's built-in `-sn uac`, which fails a call whose 180 arrives after its 200
(callkeeper must keep per-dialog order). sippy and Kamailio are driven by bench/sipp/uac_tolerant.xml,
which ignores a late 1xx: sippy's worker threads and Kamailio's worker processes forward the 180
after the 200 now and then (legal over UDP), and the built-in uac then fails those calls (0.1-1 % of
them here from 100 calls/s on; ../shared/peers/README.md saw 4-6 % for sippy). At the end each of
them runs one step with the strict built-in uac at its maximum rate, to show how often it happens.

    python bench/b2bua_bench.py [--seconds 15] [--rates 50,100,...] [--systems callkeeper,sippy,kamailio]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import cpu_seconds
from middleboxes import (
    CALLER,
    LABELS,
    SIPP_BUFFER,
    SIPP_CPU,
    SIPP_START_ERRORS,
    STARTERS,
    STRICT_UAC,
    Middlebox,
    cpu_layout,
    error_lines,
    file_size,
    missing,
    on_cpu,
    raise_socket_buffers,
    read_stats,
    sipp_ports,
    stat,
    use_shared_cpus,
)

DEFAULT_RATES = [50, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1200, 1400, 1600, 2000, 2400,
                 2800, 3200, 4000]  # fmt: skip
CALL_MS = 100
RECV_TIMEOUT_MS = 10000  # a call that waits longer than this for a message fails (bounds a step)
DRAIN_SECONDS = 15.0  # the callee keeps each call 4 s after its BYE (timewait)


@dataclass
class Step:
    system: str
    rate: int
    calls: int
    successful: int = 0
    failed: int = 0
    unexpected: int = 0
    timeouts: int = 0
    retransmissions: int = 0
    uas_successful: int = 0
    uas_failed: int = 0
    uas_retransmissions: int = 0
    uas_unfinished: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0  # percent of one core
    leftover_calls: float | None = None  # callkeeper_calls_active after the drain
    stalls: int = 0  # SIPp's own loop stalled > 500 ms (its watchdog): the machine, not the box
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.successful == self.calls
            and self.failed == 0
            and self.retransmissions == 0
            and self.uas_failed == 0
            and self.uas_retransmissions == 0
            and self.uas_unfinished == 0
        )

    @property
    def cpu_ms_per_call(self) -> float:
        return 10.0 * self.cpu / self.rate if self.rate else 0.0

    def describe(self) -> str:
        verdict = "ok" if self.clean else "FAIL"
        text = (
            f"{self.successful:>6}/{self.calls:<6} failed={self.failed:<4} "
            f"(unexp={self.unexpected} timeout={self.timeouts}) retrans={self.retransmissions:<4} "
            f"callee: done={self.uas_successful:<6} failed={self.uas_failed} "
            f"retrans={self.uas_retransmissions} open={self.uas_unfinished}  "
            f"cpu={self.cpu:5.1f}% ({self.cpu_ms_per_call:.2f} ms/call)  {self.elapsed:5.1f}s  "
            f"{verdict}"
        )
        if self.leftover_calls:
            text += f"  calls_active left={self.leftover_calls:.0f}"
        if self.stalls:
            text += f"  (SIPp itself stalled >500 ms {self.stalls}x: machine noise)"
        return text


def wait_for_callee(box: Middlebox, not_before: float) -> dict[str, str] | None:
    """The callee's stats once it has no call left (the last BYE + its 4 s timewait), or at the
    deadline. Rows are written every second; only a row written after `not_before` counts."""
    deadline = time.monotonic() + DRAIN_SECONDS
    values = box.uas.stats()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            written = box.uas.stat_file.stat().st_mtime
        except OSError:
            continue
        values = box.uas.stats()
        if written >= not_before and stat(values, "CurrentCall") == 0:
            break
    return values


def run_step(
    box: Middlebox, rate: int, seconds: float, workdir: Path, scenario: list[str] | None = None
) -> Step:
    """One rate step: SIPp (CPU 1 unless shared) places rate*seconds calls of CALL_MS through `box`."""
    calls = max(1, int(rate * seconds))
    scenario = scenario or box.caller
    step = Step(box.name, rate, calls)
    tag = f"{box.name}-{rate}-{time.monotonic_ns()}"
    stat_file, error_file = workdir / f"uac-{tag}.csv", workdir / f"uac-{tag}.err"
    callee_before = box.uas.stats()
    callee_errors_at = file_size(box.uas.error_file)
    pids = box.pids()
    for _attempt in range(3):
        command = on_cpu(SIPP_CPU, [
            "sipp", *scenario, "-s", "bob", "-i", "127.0.0.1",
            *sipp_ports(), "-r", str(rate), "-m", str(calls), "-l", str(max(1000, rate * 3)),
            "-d", str(CALL_MS), "-recv_timeout", str(RECV_TIMEOUT_MS), "-nostdin",
            "-buff_size", SIPP_BUFFER, "-trace_stat", "-stf", str(stat_file), "-fd", "1",
            "-trace_err", "-error_file", str(error_file), box.target,
        ])  # fmt: skip
        cpu_before = cpu_seconds(pids)
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=seconds * 2 + 60,
                cwd=workdir,
            )
        except subprocess.TimeoutExpired:
            step.errors.append("SIPp caller did not finish in time: killed")
            break
        # A port taken meanwhile by another process: SIPp exits at once; try other ports.
        if done.returncode not in SIPP_START_ERRORS or time.monotonic() - started > 5:
            break
    step.elapsed = time.monotonic() - started
    step.cpu = 100.0 * (cpu_seconds(pids) - cpu_before) / step.elapsed
    caller = read_stats(stat_file)
    step.successful = stat(caller, "SuccessfulCall(C)")
    step.failed = stat(caller, "FailedCall(C)")
    step.unexpected = stat(caller, "FailedUnexpectedMessage(C)")
    step.timeouts = stat(caller, "FailedTimeoutOnRecv(C)") + stat(caller, "FailedMaxUDPRetrans(C)")
    step.retransmissions = stat(caller, "Retransmissions(C)")
    callee = wait_for_callee(box, time.time() + 1.0)
    step.uas_successful = stat(callee, "SuccessfulCall(C)") - stat(
        callee_before, "SuccessfulCall(C)"
    )
    step.uas_failed = stat(callee, "FailedCall(C)") - stat(callee_before, "FailedCall(C)")
    step.uas_retransmissions = stat(callee, "Retransmissions(C)") - stat(
        callee_before, "Retransmissions(C)"
    )
    step.uas_unfinished = stat(callee, "CurrentCall")
    step.leftover_calls = box.metric("callkeeper_calls_active")
    step.stalls = watchdog_trips(error_file) + watchdog_trips(box.uas.error_file, callee_errors_at)
    if not step.clean:
        step.errors += [f"caller: {line}" for line in error_lines(error_file)]
        step.errors += [
            f"callee: {line}" for line in error_lines(box.uas.error_file, callee_errors_at, 2)
        ]
    return step


def watchdog_trips(path: Path, offset: int = 0) -> int:
    """How often SIPp's watchdog saw its own main loop late by more than 500 ms since `offset`."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().count(b"watchdog timer")
    except OSError:
        return 0


def ratio(numerator: int, denominator: int) -> str:
    return f"{numerator / denominator:.1f}x" if denominator else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of a rate step")
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--systems", default="callkeeper,sippy,kamailio")
    parser.add_argument("--retries", type=int, default=1, help="re-runs of a failing step")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--cpus",
        choices=["pinned", "shared"],
        default="pinned",
        help="pinned: middlebox on CPU 0, SIPp on CPU 1; shared: nothing pinned, as in "
        "../shared/peers/README.md section 7",
    )
    args = parser.parse_args(argv)
    if args.cpus == "shared":
        use_shared_cpus()
    rates = [int(rate) for rate in args.rates.split(",")]
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    print(raise_socket_buffers(), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="b2bua-bench-"))
    boxes: dict[str, Middlebox] = {}
    skipped: dict[str, str] = {}
    best: dict[str, Step | None] = {}
    strict: dict[str, Step] = {}
    try:
        for name in systems:
            reason = missing(name)
            if reason is None:
                try:
                    boxes[name] = STARTERS[name](workdir)
                    best[name] = None
                    continue
                except (RuntimeError, OSError) as error:
                    reason = f"did not start: {error}"
            skipped[name] = reason
            print(f"{LABELS.get(name, name)}: skipped ({reason})", flush=True)
        print(
            f"calls of {CALL_MS} ms, {args.seconds:g} s per step; {cpu_layout()}; "
            f"work directory {workdir}",
            flush=True,
        )
        for name, box in boxes.items():
            print(f"  {box.label:<26} pid {box.process.pid:<7} caller: {CALLER[name]}")
        active = list(boxes)
        for rate in rates:
            for name in list(active):
                box = boxes[name]
                for attempt in range(args.retries + 1):
                    step = run_step(box, rate, args.seconds, workdir)
                    retry = " (retry)" if attempt else ""
                    print(f"{box.label:<26} {rate:>5}/s{retry:<8} {step.describe()}", flush=True)
                    for line in step.errors:
                        print(f"      {line}", flush=True)
                    if step.clean or not box.alive():
                        break
                if step.clean:
                    best[name] = step
                else:
                    active.remove(name)
                    if not box.alive():
                        print(f"      {box.label} exited (code {box.process.returncode})")
            if not active:
                break
        # The baselines driven by the tolerant uac: one step with the strict built-in uac at their
        # maximum rate, to show how often they reorder a 180 after its 200.
        for name, step in best.items():
            box = boxes[name]
            if step is None or box.caller == STRICT_UAC or not box.alive():
                continue
            check = run_step(box, step.rate, args.seconds, workdir, STRICT_UAC)
            strict[name] = check
            label = f"{box.label} -sn uac"
            print(f"{label:<26} {check.rate:>5}/s{'':<8} {check.describe()}", flush=True)
            for line in check.errors[:2]:
                print(f"      {line}", flush=True)
    finally:
        for box in boxes.values():
            box.stop()
    summarize(best, skipped, rates, strict)
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


def summarize(
    best: dict[str, Step | None], skipped: dict[str, str], rates: list[int], strict: dict[str, Step]
) -> None:
    print(f"\nB2BUA calls/s with 0 failed calls and 0 retransmissions ({CALL_MS} ms calls):")
    print(f"  {'middlebox':<26} {'max calls/s':>11} {'CPU at max':>11} {'CPU/call':>9}  caller")
    for name, step in best.items():
        if step is None:
            print(f"  {LABELS[name]:<26} {'none':>11} {'':>11} {'':>9}  {CALLER[name]}")
            continue
        top = "  (passed every step)" if step.rate == rates[-1] else ""
        print(
            f"  {LABELS[name]:<26} {step.rate:>11} {step.cpu:>10.0f}% "
            f"{step.cpu_ms_per_call:>6.2f} ms  {CALLER[name]}{top}"
        )
    for name, reason in skipped.items():
        print(f"  {LABELS.get(name, name):<26} skipped: {reason}")
    for name, check in strict.items():
        print(
            f"  ({LABELS[name]} with SIPp's built-in -sn uac at {check.rate}/s: {check.failed} of "
            f"{check.calls} calls failed, {check.unexpected} of them on an unexpected message)"
        )
    rate = {name: step.rate if step else 0 for name, step in best.items()}
    if "callkeeper" in rate:
        if "sippy" in rate:
            print(
                f"callkeeper / sippy    = {ratio(rate['callkeeper'], rate['sippy'])}"
                "  (target >= 5x)"
            )
        if "kamailio" in rate:
            print(f"callkeeper / Kamailio = {ratio(rate['callkeeper'], rate['kamailio'])}")


if __name__ == "__main__":
    sys.exit(main())
