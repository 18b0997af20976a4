"""`callkeeper serve` tunes the cyclic garbage collector once started (io/server.py)."""

from __future__ import annotations

import gc

from callkeeper.io.server import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_start_up_objects_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()  # full collections still run: cycles are still freed
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
