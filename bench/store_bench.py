"""Store write rates: memory (the baseline), SQLite (WAL, group commit) and Redis (a real server).

Two shapes of load, both with ~200-byte values (a msgspec-encoded binding or checkpoint):
- sequential: one writer awaiting each put — an IVR node checkpointing every DTMF digit;
- storm: `--concurrency` puts in flight at once, round after round — a re-registration storm.
During the storm a ticker task measures the event loop's worst stall, which shows that SQLite's
work stays off the loop. Results are medians of `--rounds` runs, printed with their ratio to the
memory store measured in the same run (this machine is shared and noisy; absolute numbers drift).

    python bench/store_bench.py [--rounds 5] [--writes 2000] [--concurrency 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from callkeeper.store import Store, open_store  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402

VALUE = bytes(range(200))


@dataclass
class Result:
    backend: str
    sequential: float  # writes/s
    storm: float  # writes/s
    stall_ms: float  # worst event-loop stall during the storm


async def sequential_rate(store: Store, writes: int) -> float:
    start = time.perf_counter()
    for i in range(writes):
        await store.put("ivr", "call-1", VALUE + str(i).encode())
    return writes / (time.perf_counter() - start)


async def storm_rate(store: Store, writes: int, concurrency: int) -> tuple[float, float]:
    worst_gap = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst_gap
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst_gap = max(worst_gap, now - last)
            last = now

    tick = asyncio.create_task(ticker())
    start = time.perf_counter()
    for base in range(0, writes, concurrency):
        count = min(concurrency, writes - base)
        await asyncio.gather(
            *(store.put("bindings", f"user{base + i}", VALUE, ttl=3600) for i in range(count))
        )
    elapsed = time.perf_counter() - start
    stop.set()
    await tick
    return writes / elapsed, worst_gap * 1000


async def measure(backend: str, url: str, args: argparse.Namespace) -> Result:
    sequential: list[float] = []
    storm: list[float] = []
    stalls: list[float] = []
    async with open_store(url) as store:
        await store.put("warm", "up", b"")
        for _ in range(args.rounds):
            sequential.append(await sequential_rate(store, args.writes))
            rate, stall = await storm_rate(store, args.writes, args.concurrency)
            storm.append(rate)
            stalls.append(stall)
    return Result(
        backend, statistics.median(sequential), statistics.median(storm), statistics.median(stalls)
    )


async def run(args: argparse.Namespace, urls: dict[str, str]) -> list[Result]:
    return [await measure(backend, url, args) for backend, url in urls.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis:
        urls = {
            "memory": "memory:",
            "sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}",
            "redis": redis.url,
        }
        results = asyncio.run(run(args, urls))
    base = results[0]
    print(
        f"store writes/s, median of {args.rounds} rounds of {args.writes} "
        f"(storm: {args.concurrency} in flight)"
    )
    header = ("backend", "sequential", "ratio", "storm", "ratio", "stall ms")
    print("{:8} {:>12} {:>8} {:>12} {:>8} {:>9}".format(*header))
    for r in results:
        print(
            f"{r.backend:8} {r.sequential:12,.0f} {r.sequential / base.sequential:8.3f} "
            f"{r.storm:12,.0f} {r.storm / base.storm:8.3f} {r.stall_ms:9.1f}"
        )


if __name__ == "__main__":
    main()
