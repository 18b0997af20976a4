"""callkeeper's MediaRelay alone in a process (uvloop, as `callkeeper serve` runs it), for relay_bench.

Driven by one command per line on stdin, answered by one JSON line on stdout:

    setup JSON                      {"phones": [port, ...], "port_min": P, "port_max": Q}:
                                    stream i = sides a<i>, b<i> for phones 2i, 2i+1 (SetPeer),
                                    Connect(a<i>, b<i>); side ports (RTP even, RTCP above) are
                                    the free pairs from P up; answers {"ports": [...]}, the side
                                    port each phone sends to
    stats                           packets in/out, drops by reason, bind failures, the loop's
                                    lag (p99/max, how late a 10 ms timer ran) since the last stats
    teardown                        CloseSide for every side
    quit

No SIP: the commands are the ones `calls/media_anchor.py` queues for a call's two legs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from callkeeper.calls.media_anchor import CloseSide, Connect, OpenSide, SetPeer  # noqa: E402
from callkeeper.io.relay import MediaRelay  # noqa: E402
from callkeeper.io.server import tune_gc  # noqa: E402

HOST = "127.0.0.1"


def reply(value: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_pairs(count: int, low: int, high: int) -> list[int]:
    """Even ports from `low` whose pair is free (the machine is shared: some are taken)."""
    ports = [port for port in range(low + low % 2, high - 1, 2) if _free(port) and _free(port + 1)]
    if len(ports) < count:
        raise RuntimeError(f"only {len(ports)} free port pairs in {low}-{high}, need {count}")
    return ports[:count]


def setup(relay: MediaRelay, phones: list[int], low: int, high: int) -> list[int]:
    ports = free_pairs(len(phones), low, high)
    for i in range(0, len(phones), 2):
        a, b = f"a{i // 2}", f"b{i // 2}"
        relay(OpenSide(a, ports[i]))
        relay(OpenSide(b, ports[i + 1]))
        relay(SetPeer(a, (HOST, phones[i]), latch_any=False))
        relay(SetPeer(b, (HOST, phones[i + 1]), latch_any=False))
        relay(Connect(a, b))
    return ports  # the sides' sockets are read from the moment they are bound


async def serve() -> None:
    loop = asyncio.get_running_loop()
    relay = MediaRelay(HOST, loop)
    tune_gc()
    lines: asyncio.Queue[str] = asyncio.Queue()
    stdin = sys.stdin
    pending = bytearray()

    def readable() -> None:
        chunk = os.read(stdin.fileno(), 4096)
        if not chunk:
            lines.put_nowait("quit")
            return
        pending.extend(chunk)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            lines.put_nowait(line.decode().strip())

    loop.add_reader(stdin.fileno(), readable)
    # the loop's own lag: how late a 10 ms timer fires (a stalled relay vs a stalled generator)
    lags: list[float] = []

    def tick(due: float) -> None:
        now = loop.time()
        lags.append(now - due)
        loop.call_at(now + 0.01, tick, now + 0.01)

    loop.call_soon(tick, loop.time())
    reply({"ready": True, "pid": os.getpid()})
    while True:
        line = await lines.get()
        words = line.split()
        if not words:
            continue
        if words[0] == "setup":
            spec = json.loads(line[len("setup") :])
            try:
                ports = setup(relay, spec["phones"], spec["port_min"], spec["port_max"])
            except RuntimeError as error:
                reply({"error": str(error)})
                continue
            reply({"ports": ports, "bind_failures": relay.bind_failures})
        elif words[0] == "stats":
            reply(
                {
                    "packets_in": relay.packets_in,
                    "packets_out": relay.packets_out,
                    "dropped": dict(relay.dropped),
                    "bind_failures": relay.bind_failures,
                    "loop_lag_p99_ms": 1000 * sorted(lags)[int(0.99 * len(lags))] if lags else 0,
                    "loop_lag_max_ms": 1000 * max(lags, default=0.0),
                }
            )
            lags.clear()
        elif words[0] == "teardown":
            for side in list(relay.sides):
                relay(CloseSide(side))
            reply({"sides": len(relay.sides)})
        elif words[0] == "quit":
            relay.close()
            reply({"bye": True})
            return


def main() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
