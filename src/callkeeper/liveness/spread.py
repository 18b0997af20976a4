"""Where in each interval an endpoint's probes go, so 10,000 endpoints do not probe at once.

Each endpoint gets a fixed phase in [0, 1) and is probed at `(k + phase) × interval`. The phase
comes from a keyed BLAKE2b hash of its id, not from a random draw: it is deterministic (the
same endpoint probes at the same offset after a restart or a re-registration, and tests see the
same schedule every run), it needs no randomness source in the pure core, and a hash spreads
any set of ids uniformly. A fixed grid, unlike "probe again one interval after the last answer",
cannot drift into lock-step after a mass event (every phone re-registering after an outage).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

PhaseFunction = Callable[[str], float]

_SCALE = 2.0**-64


def hash_phase(endpoint_id: str, seed: bytes = b"") -> float:
    """The endpoint's phase in [0, 1): 64 bits of BLAKE2b(endpoint_id, key=seed)."""
    digest = hashlib.blake2b(endpoint_id.encode(), digest_size=8, key=seed).digest()
    return int.from_bytes(digest, "big") * _SCALE


def seeded_phase(seed: bytes) -> PhaseFunction:
    """A phase function with its own key, e.g. one per node so nodes do not probe in step."""
    return lambda endpoint_id: hash_phase(endpoint_id, seed)


def next_slot(now: float, interval: float, phase: float, epsilon: float = 1e-6) -> float:
    """The first time `(k + phase) × interval` strictly after `now` (by more than `epsilon`)."""
    slot = (math.floor(now / interval - phase) + 1 + phase) * interval
    if slot <= now + epsilon:  # float rounding put it on or just before `now`
        slot += interval
    return slot
