"""A long mutation-fuzzing run of the SIP parser (the engine of tests/test_fuzz.py).

    python bench/fuzz_long.py [ITERATIONS] [--seed N]

ITERATIONS defaults to 200,000. The seed is printed, so any failure can be replayed; a failure
(any exception other than ParseError, from parse_message or the stream parser) stops the run,
prints the case and exits 1. Otherwise the tally of outcomes and the rate are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from test_fuzz import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("iterations", nargs="?", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args()
    print(f"fuzzing the SIP parser: {args.iterations:,} cases, seed {args.seed}")
    started = time.process_time()
    done = 0
    tally: dict[str, int] = {}
    chunk = 10_000
    while done < args.iterations:
        size = min(chunk, args.iterations - done)
        try:
            part = run(size, seed=args.seed + done)
        except AssertionError as failure:
            print(f"FAILED after {done:,} cases:\n{failure}")
            return 1
        for label, count in part.items():
            tally[label] = tally.get(label, 0) + count
        done += size
    elapsed = time.process_time() - started
    print(f"no unexpected exception in {done:,} cases ({done / elapsed:,.0f} cases/s of CPU):")
    for label, count in sorted(tally.items()):
        print(f"  {label:14} {count:9,}  {count / done:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
