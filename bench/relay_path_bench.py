"""Python cost of the built-in relay's per-packet path, without the system calls.

Drives `MediaRelay.receive_rtp` in-process, as the event loop would on each datagram: two sides
opened, signalled, latched and connected with the media anchor's commands, then 20 ms PCMU
packets (172 octets) from each phone in turn, through the fast path, `_forward_rtp` and the
receiving side's `StreamContinuity`, with the sockets' `sendto` replaced by a counter (no system
call). Prints the best of several rounds in µs per packet.

With `--baseline SRC` (a copy of another tree's `src/`, e.g. before a change), the two trees are
measured in alternating subprocesses (ABAB...) and the ratio of their medians is printed.

    python bench/relay_path_bench.py [--packets 60000] [--rounds 9] [--pairs 3]
                                     [--baseline /tmp/relay_orig/src] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
PAYLOAD = bytes(160)
_FIXED = struct.Struct("!BBHII")
PHONE_A = ("127.0.0.1", 40000)
PHONE_B = ("127.0.0.1", 40002)


class _CountingSend:
    """Stands in for a socket's `sendto`: counts what would be sent."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, data: bytes | bytearray, address: object) -> None:
        self.sent += 1


def _free_port_pair() -> int:
    """An even port whose next port is free too (a side binds RTP and RTCP)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1] & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
                rtp.bind(("127.0.0.1", port))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp:
                    rtcp.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


def _stream(ssrc: int, count: int) -> list[bytes]:
    """`count` consecutive packets of one phone (sequence wraps, as on a long call)."""
    return [
        _FIXED.pack(0x80, 0, (1000 + i) & 0xFFFF, (5000 + 160 * i) & 0xFFFFFFFF, ssrc) + PAYLOAD
        for i in range(count)
    ]


def measure(packets: int, rounds: int, use_uvloop: bool = False) -> dict[str, Any]:
    """µs per packet (best and median of `rounds`) for the callkeeper importable now."""
    from callkeeper.calls.media_anchor import Connect, OpenSide, SetPeer
    from callkeeper.io.relay import MediaRelay

    if use_uvloop:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        relay = MediaRelay("127.0.0.1", loop=loop)
        for side, phone in (("a", PHONE_A), ("b", PHONE_B)):
            relay(OpenSide(side, _free_port_pair()))
            relay(SetPeer(side, phone, False))
        counters = []
        for side in ("a", "b"):
            endpoint = relay.sides[side].rtp
            assert endpoint is not None, "the side's RTP socket could not be bound"
            counter = _CountingSend()
            endpoint.sendto = counter
            counters.append(counter)
        relay(Connect("a", "b"))
        side_a, side_b = relay.sides["a"], relay.sides["b"]
        half = max(1, min(packets // 2, 0x7FFF))
        from_a = _stream(0x11111111, half)
        from_b = _stream(0x22222222, half)
        receive = relay.receive_rtp
        # The first packet of each phone latches its side (the slow path).
        receive(side_a, from_a[0], PHONE_A)
        receive(side_b, from_b[0], PHONE_B)
        results = []
        for _ in range(rounds):
            # Each round replays the same packets as a new source (as after a re-bridge): the
            # continuity drops packets more than 32767 behind a source's first one.
            side_a.continuity.switch_source()
            side_b.continuity.switch_source()
            before = sum(t.sent for t in counters)
            started = time.perf_counter()
            for data_a, data_b in zip(from_a, from_b, strict=True):
                receive(side_a, data_a, PHONE_A)
                receive(side_b, data_b, PHONE_B)
            elapsed = time.perf_counter() - started
            sent = sum(t.sent for t in counters) - before
            if sent != 2 * half:
                raise RuntimeError(f"{sent} of {2 * half} packets forwarded: not the fast path")
            results.append(elapsed / (2 * half) * 1e6)
        relay.close()
    finally:
        loop.close()
    return {"best": min(results), "median": statistics.median(results), "rounds": results}


def _child(src: str, packets: int, rounds: int, use_uvloop: bool) -> dict[str, Any]:
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--src",
            src,
            "--packets",
            str(packets),
            "--rounds",
            str(rounds),
            *(["--uvloop"] if use_uvloop else []),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--packets", type=int, default=60_000, help="per round, both phones (at most 65534)"
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--pairs", type=int, default=3, help="ABAB pairs with --baseline")
    parser.add_argument("--baseline", help="another tree's src/ to compare against")
    parser.add_argument("--src", default=str(SRC), help="the src/ to import callkeeper from")
    parser.add_argument("--uvloop", action="store_true", help="uvloop, as `callkeeper serve`")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    if args.child:
        sys.path.insert(0, args.src)
        import callkeeper

        result = measure(args.packets, args.rounds, args.uvloop)
        result["module"] = callkeeper.__file__
        print(json.dumps(result))
        return 0

    trees = {"current": args.src}
    if args.baseline:
        trees = {"baseline": args.baseline, **trees}
    best: dict[str, list[float]] = {name: [] for name in trees}
    pairs = args.pairs if args.baseline else 1
    for pair in range(pairs):
        order = list(trees) if pair % 2 == 0 else list(reversed(trees))
        for name in order:
            result = _child(trees[name], args.packets, args.rounds, args.uvloop)
            best[name].append(result["best"])
            print(
                f"{name:<9} best {result['best']:.3f} µs/packet "
                f"(median {result['median']:.3f}; {result['module']})",
                flush=True,
            )
    for name, values in best.items():
        print(f"{name:<9} median of best: {statistics.median(values):.3f} µs/packet")
    if args.baseline:
        ratio = statistics.median(best["current"]) / statistics.median(best["baseline"])
        print(f"current / baseline: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
