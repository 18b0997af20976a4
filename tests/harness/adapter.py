"""Glue between any sans-IO core and the simulation: timers in, events out.

A core is anything with `next_event()`, `get_timer()` and `handle_timer(now)` (the
TransactionLayer today; the dialog layer, liveness detector or B2BUA later). Subclass
`SansIOAdapter`, implement `on_event` to route each output (e.g. `SendMessage` → the network,
everything else → the next layer up), and call `flush(now)` after every input you feed the core.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


class SansIOCore(Protocol[E_co]):
    def next_event(self) -> E_co | None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class SansIOAdapter(Generic[E]):
    """Makes a core a simulation `Participant` and drains its events in order."""

    def __init__(self, core: SansIOCore[E]) -> None:
        self.core = core
        self._flushing = False

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.flush(now)

    def flush(self, now: float) -> None:
        """Route every pending event. Re-entrant calls (from `on_event`) are folded into the
        outer loop, so events are always handled in the order the core produced them."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while (event := self.core.next_event()) is not None:
                self.on_event(event, now)
        finally:
            self._flushing = False

    def on_event(self, event: E, now: float) -> None:
        raise NotImplementedError
