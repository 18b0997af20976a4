"""Run every benchmark in bench/ that exists and has a `main()`, then print a summary (`make bench`).

Each bench runs with its own defaults (its `main()` sees an empty command line) and prints its own
results and ratios against a baseline measured in the same run. A bench that is missing, fails to
import or raises is reported and the others still run.

    python bench/run_all.py [--only b2bua_bench,call_memory] [--skip fuzz_long] [--list]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# In this order: the quick ones first, the long load tests last.
BENCHES = [
    "parse_bench",
    "store_bench",
    "options_bench",
    "b2bua_bench",
    "recovery_bench",
    "call_memory",
    "fuzz_long",
]


def run_one(name: str) -> tuple[str, float]:
    """Import bench/NAME.py and call its main(); return (status, seconds)."""
    path = HERE / f"{name}.py"
    if not path.exists():
        return "not present", 0.0
    started = time.monotonic()
    saved_argv = sys.argv
    sys.argv = [str(path)]
    try:
        module = importlib.import_module(name)
        entry = getattr(module, "main", None)
        if not callable(entry):
            return "no main()", 0.0
        code = entry()
    except SystemExit as exit_:
        code = exit_.code
    except KeyboardInterrupt:
        raise
    except BaseException:  # a broken bench must not stop the others
        traceback.print_exc()
        return "error (traceback above)", time.monotonic() - started
    finally:
        sys.argv = saved_argv
    elapsed = time.monotonic() - started
    status = "ok" if code in (0, None) else f"exit {code}"
    return status, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated bench names")
    parser.add_argument("--skip", default="", help="comma-separated bench names")
    parser.add_argument("--list", action="store_true", help="list the benches and exit")
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name}
    skip = {name for name in args.skip.split(",") if name}
    # Benches import their helpers (`common`, ...) from bench/ and callkeeper from src/.
    for path in (str(ROOT / "src"), str(HERE)):
        if path not in sys.path:
            sys.path.insert(0, path)
    names = [name for name in BENCHES if (not only or name in only) and name not in skip]
    extra = sorted(
        path.stem
        for path in HERE.glob("*_bench.py")
        if path.stem not in BENCHES and (not only or path.stem in only) and path.stem not in skip
    )
    names += extra  # benches added later that follow the *_bench.py naming
    if args.list:
        for name in names:
            print(f"{name:<16} {'present' if (HERE / f'{name}.py').exists() else 'not present'}")
        return 0
    results: list[tuple[str, str, float]] = []
    for name in names:
        if not (HERE / f"{name}.py").exists():
            results.append((name, "not present", 0.0))
            continue
        print(f"\n===== {name} =====", flush=True)
        status, elapsed = run_one(name)
        results.append((name, status, elapsed))
        print(f"===== {name}: {status} ({elapsed:.0f} s) =====", flush=True)
    print("\nbench summary:")
    for name, status, elapsed in results:
        timing = f"{elapsed:6.0f} s" if elapsed else " " * 8
        print(f"  {name:<16} {timing}  {status}")
    failed = [name for name, status, _ in results if status not in ("ok", "not present")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
