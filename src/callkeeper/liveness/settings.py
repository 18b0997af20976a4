"""How long an endpoint may stay quiet before it is SUSPECT, and before it is DOWN.

Why these thresholds (DESIGN.md "The recovery engine", issue 5):

- A phone that follows RFC 5626 §4.4.1 sends a keep-alive every 0.8–1.0 × Flow-Timer (baresip
  measured 4.1–4.6 s for Flow-Timer 5); we must also survive ±30 % jitter, so one gap may be as
  long as 1.3 × interval. SUSPECT comes after `suspect_factor` (1.5) × interval of silence: above
  any jittered gap (1.3), below the gap a single lost keep-alive leaves (≥ 1.6, usually 2).
- DOWN comes after `misses × interval + down_grace` of silence. With `misses = 3` the worst gap
  around one lost keep-alive (2 × 1.3 = 2.6 intervals) is still below it, so neither jitter nor
  a single miss can cause a false DOWN; two lost keep-alives in a row (≤ 3 × 1.0 intervals at
  RFC pacing) cannot either. `misses = 2` still tolerates a single miss at RFC pacing
  (≤ 2 × 1.0 intervals, plus the grace for network delay) but not a single miss *and* 30 % jitter.
- The acceptance bound is "DOWN within interval × misses + 1 s of the last sign of life". The
  deadline is exact (`last_seen + misses × interval + down_grace`), the timer wheel rounds it up
  by at most `resolution`, so the pure core's worst case is `misses × interval + 0.55 s`; the rest
  of the second is left for the io driver's own lateness under load.

Loss (measured in tests/test_liveness_tolerance.py): with misses = 3, a DOWN needs three
keep-alives lost in a row; at RFC pacing the bound *forces* a DOWN then (4 × 0.8 × 5 s = 16 s of
silence > 15.5 s), so a dead phone and that run of losses cannot be told apart. Under 10 %
random loss of CRLF keep-alives, which nobody retransmits, that is (1 - p)·p³ ≈ 9·10⁻⁴ per
keep-alive, about 0.65 DOWN per endpoint-hour at Flow-Timer 5 — each followed by ALIVE at the
next keep-alive. STUN keep-alives (retransmitted per RFC 5389) and OPTIONS probes (Timer E)
measured zero DOWN in 160,000 keep-alives / 216,000 probes at 10 % loss. Lossy UDP paths
therefore want STUN, or misses ≥ 4.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LivenessSettings:
    """The `[keepalive]` section plus the detector's own tolerances (seconds).

    `flow_timer` is the keep-alive interval we ask RFC 5626 clients for, `options_interval` the
    OPTIONS probing interval for endpoints that do not ping us, `in_call_interval` the (faster)
    interval used for any endpoint while it is in a call.
    """

    flow_timer: float = 30.0
    options_interval: float = 30.0
    in_call_interval: float = 5.0
    misses: int = 3
    suspect_factor: float = 1.5
    down_grace: float = 0.5
    resolution: float = 0.05

    def __post_init__(self) -> None:
        for name in ("flow_timer", "options_interval", "in_call_interval", "resolution"):
            if not getattr(self, name) > 0:
                raise ValueError(f"liveness: {name} must be > 0, got {getattr(self, name)!r}")
        if self.misses < 1:
            raise ValueError(f"liveness: misses must be >= 1, got {self.misses!r}")
        if not self.suspect_factor >= 1:
            raise ValueError(f"liveness: suspect_factor must be >= 1, got {self.suspect_factor!r}")
        if not self.down_grace >= 0:
            raise ValueError(f"liveness: down_grace must be >= 0, got {self.down_grace!r}")

    def suspect_after(self, interval: float) -> float:
        """Seconds of silence after which an endpoint watched at `interval` is SUSPECT."""
        return self.suspect_factor * interval

    def down_after(self, interval: float) -> float:
        """Seconds of silence after which an endpoint watched at `interval` is DOWN."""
        return self.misses * interval + self.down_grace
