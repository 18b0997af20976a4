"""CPU and memory per call of the pure core alone: no sockets, no event loop, a fake clock.

SIPp-like callers and callees written out as bytes (INVITE / 180 / 200 / ACK, BYE / 200 after
`--hold` seconds) go through `CallManager` at `--rate` calls/s of simulated time, so the
RFC 6026 Accepted and Completed tails (64*T1) pile up as they do in the real server. Without
the noise of a shared machine's scheduler, two trees compare well (ABAB):

    PYTHONPATH=/tmp/old/src python bench/core_bench.py   # vs. the working tree
    python bench/core_bench.py [--calls 16000] [--rate 400] [--hold 0.1] [--tune-gc]
    python bench/core_bench.py --memory                  # KiB per established call

It prints CPU ms per call (the bench's own message building included) and the collector's
pauses per generation; `--tune-gc` applies `callkeeper serve`'s start-up GC tuning first.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import time
import tracemalloc
from collections import deque
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from callkeeper.calls.manager import CallManager
from callkeeper.config import load_config
from callkeeper.sip.transaction_messages import counter_ids
from callkeeper.sip.transport import Flow, Transmit

SERVER, CALLER, CALLEE = ("127.0.0.1", 5060), ("127.0.0.1", 5061), ("127.0.0.1", 5062)
CONFIG = (
    '[sip]\nlisten = ["udp:127.0.0.1:5060"]\ntrusted_sources = ["127.0.0.1/32"]\n'
    '[store]\nurl = "memory:"\n[log]\nlevel = "warning"\n'
    '[[users]]\nname = "bob"\nstatic_contacts = ["sip:bob@127.0.0.1:5062"]\n'
)
SDP = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
COPIED = re.compile(rb"^(Via|From|To|Call-ID|CSeq|Record-Route):", re.IGNORECASE)


def caller_request(call: int, method: str, cseq: int, to_tag: str = "") -> bytes:
    body = SDP if method == "INVITE" else ""
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{call}-{cseq}-{method}\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5061>;tag={call}SIPpTag001\r\n"
        f"To: bob <sip:bob@127.0.0.1:5060>{tag}\r\nCall-ID: {call}-bench@127.0.0.1\r\n"
        f"CSeq: {cseq} {method}\r\nContact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\n"
        f"Subject: Performance Test\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def callee_response(request: bytes, status: int, reason: str, tag: str, body: str = "") -> bytes:
    lines = []
    for line in request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        if COPIED.match(line):
            if line[:3].lower() == b"to:" and b";tag=" not in line:
                line += b";tag=" + tag.encode()
            lines.append(line)
    extra = b"Contact: <sip:bob@127.0.0.1:5062>\r\n"
    if body:
        extra += b"Content-Type: application/sdp\r\n"
    return (
        f"SIP/2.0 {status} {reason}\r\n".encode()
        + b"\r\n".join(lines)
        + b"\r\n"
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
    )


class Run:
    def __init__(self, config_dir: Path) -> None:
        path = config_dir / "core_bench.toml"
        path.write_text(CONFIG)
        self.core = CallManager.from_config(
            load_config(path), counter_ids("ab12cd34"), os.urandom, secret=b"k" * 32
        )
        self.core.add_local_address("udp", SERVER)
        self.now = 1000.0
        self.core.start(self.now)
        self.to_caller: list[bytes] = []
        self.to_callee: list[bytes] = []
        self.from_caller = Flow("udp", CALLER, SERVER)
        self.from_callee = Flow("udp", CALLEE, SERVER)

    def feed(self, data: bytes, flow: Flow) -> None:
        core = self.core
        core.receive_datagram(data, flow, self.now)
        self._drain()

    def _drain(self) -> None:
        core = self.core
        while (command := core.next_command()) is not None:
            if type(command) is Transmit:
                sent_to = self.to_caller if command.flow.remote == CALLER else self.to_callee
                sent_to.append(command.data)
        while core.next_event() is not None:
            pass

    def advance(self, seconds: float) -> None:
        self.now += seconds
        core = self.core
        while (deadline := core.get_timer()) is not None and deadline <= self.now:
            core.handle_timer(self.now)
            self._drain()
        self.callee_answers()
        self.to_caller.clear()

    def callee_answers(self) -> None:
        """Answer what reached the callee, as SIPp -sn uas does."""
        while self.to_callee:
            received, self.to_callee = self.to_callee, []
            for data in received:
                method = data[: data.find(b" ")]
                if method == b"INVITE":
                    tag = f"uas{len(data)}{self.now:.3f}"
                    self.feed(callee_response(data, 180, "Ringing", tag), self.from_callee)
                    self.feed(callee_response(data, 200, "OK", tag, SDP), self.from_callee)
                elif method in (b"BYE", b"OPTIONS"):
                    self.feed(callee_response(data, 200, "OK", "x"), self.from_callee)

    def answered(self) -> dict[int, str]:
        """The To tag of each 200 for an INVITE the caller got, by call number."""
        tags = {}
        for data in self.to_caller:
            if data.startswith(b"SIP/2.0 200") and b" INVITE\r\n" in data:
                call = re.search(rb"Call-ID: (\d+)-bench", data)
                tag = re.search(rb"^To:.*;tag=([^;\r\n]+)", data, re.MULTILINE)
                assert call is not None and tag is not None
                tags[int(call[1])] = tag[1].decode()
        self.to_caller.clear()
        return tags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=16000)
    parser.add_argument("--rate", type=float, default=400.0, help="calls/s of simulated time")
    parser.add_argument("--hold", type=float, default=0.1, help="seconds from ACK to BYE")
    parser.add_argument("--tune-gc", action="store_true", help="as `callkeeper serve` does")
    parser.add_argument("--memory", action="store_true", help="KiB per established call")
    args = parser.parse_args()
    with TemporaryDirectory() as directory:
        run = Run(Path(directory))
        if args.tune_gc:
            from callkeeper.io.server import tune_gc

            tune_gc()
        return measure_memory(run, args) if args.memory else measure_cpu(run, args)


def measure_cpu(run: Run, args: argparse.Namespace) -> int:
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    byes: deque[tuple[float, int, str]] = deque()
    cpu = time.process_time()
    for call in range(args.calls):
        place_call(run, call, byes, args.hold)
        while byes and byes[0][0] <= run.now:
            _, number, tag = byes.popleft()
            run.feed(caller_request(number, "BYE", 2, tag), run.from_caller)
            run.callee_answers()
        run.advance(1.0 / args.rate)
    while byes:
        _, number, tag = byes.popleft()
        run.feed(caller_request(number, "BYE", 2, tag), run.from_caller)
        run.callee_answers()
    cpu = time.process_time() - cpu
    gc.callbacks.remove(on_gc)
    done = run.core.calls_completed
    print(f"{args.calls} calls at {args.rate:g}/s: {1000 * cpu / args.calls:.3f} ms CPU/call; "
          f"completed {done}, transactions at the end {run.core.transaction_count}")  # fmt: skip
    for generation, times in pauses.items():
        print(
            f"  gc generation {generation}: {len(times)} collections, "
            f"max {1000 * max(times, default=0):.1f} ms, total {1000 * sum(times):.0f} ms"
        )
    return 0 if done == args.calls else 1


def place_call(run: Run, call: int, byes: deque[tuple[float, int, str]], hold: float) -> None:
    run.feed(caller_request(call, "INVITE", 1), run.from_caller)
    run.callee_answers()
    for number, tag in run.answered().items():
        run.feed(caller_request(number, "ACK", 1, tag), run.from_caller)
        byes.append((run.now + hold, number, tag))
    run.callee_answers()


def measure_memory(run: Run, args: argparse.Namespace) -> int:
    byes: deque[tuple[float, int, str]] = deque()
    for call in range(50):  # warm the caches up
        place_call(run, call, byes, 0.0)
    for _, number, tag in byes:
        run.feed(caller_request(number, "BYE", 2, tag), run.from_caller)
        run.callee_answers()
    byes.clear()
    run.advance(100.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for call in range(1000, 1000 + args.calls):
        place_call(run, call, byes, 3600.0)
        run.advance(1.0 / args.rate)
    gc.collect()
    setup = tracemalloc.get_traced_memory()[0]
    for _ in range(33):  # 64*T1 and a second; the callee answers the monitor's probes
        run.advance(1.0)
    lingering = run.core.transaction_count
    gc.collect()
    settled = tracemalloc.get_traced_memory()[0]
    calls = len(byes)
    print(
        f"{calls} established calls: {(setup - before) / 1024 / calls:.2f} KiB/call at set-up "
        f"(with the transactions' 64*T1 tail), {(settled - before) / 1024 / calls:.2f} KiB/call "
        f"settled, {lingering} transactions left (Python heap, tracemalloc)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
