"""`memory:` — a dict-backed store for tests, demos and single-process runs that may lose state.

Nothing survives the process, by design: it is the reference implementation of the contract
(the simplest code that obeys every rule in `callkeeper.store.base`) and the baseline the store
benchmark compares the real backends against.

Expiry uses a monotonic clock (no other process shares this data, so wall-clock time buys
nothing and a clock step must not expire bindings). Expired entries are dropped when they are
read, and by a sweep over everything at most once per `purge_interval`, piggybacked on `put`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from callkeeper.store.base import (
    Store,
    StoreClosedError,
    check_key,
    check_namespace,
    check_ttl,
    check_value,
)

_Entry = tuple[bytes, float | None]  # value, expires_at on `clock`


class MemoryStore(Store):
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, purge_interval: float = 60.0
    ) -> None:
        self._clock = clock
        self._purge_interval = purge_interval
        self._data: dict[str, dict[str, _Entry]] = {}
        self._next_purge = clock() + purge_interval
        self._closed = False

    def __repr__(self) -> str:
        entries = sum(len(space) for space in self._data.values())
        return f"<MemoryStore {entries} entries{' closed' if self._closed else ''}>"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("this memory: store is closed")

    async def put(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        self._check_open()
        check_namespace(namespace)
        check_key(key)
        check_value(value)
        ttl = check_ttl(ttl)
        now = self._clock()
        expires_at = None if ttl is None else now + ttl
        self._data.setdefault(namespace, {})[key] = (value, expires_at)
        if now >= self._next_purge:
            self.purge_expired()

    async def get(self, namespace: str, key: str) -> bytes | None:
        self._check_open()
        check_namespace(namespace)
        check_key(key)
        space = self._data.get(namespace)
        if space is None or key not in space:
            return None
        value, expires_at = space[key]
        if expires_at is not None and expires_at <= self._clock():
            del space[key]
            return None
        return value

    async def delete(self, namespace: str, key: str) -> bool:
        self._check_open()
        check_namespace(namespace)
        check_key(key)
        space = self._data.get(namespace)
        if space is None or key not in space:
            return False
        _, expires_at = space.pop(key)
        return expires_at is None or expires_at > self._clock()

    async def scan(self, namespace: str) -> list[tuple[str, bytes]]:
        self._check_open()
        check_namespace(namespace)
        space = self._data.get(namespace, {})
        now = self._clock()
        dead = [key for key, (_, exp) in space.items() if exp is not None and exp <= now]
        for key in dead:
            del space[key]
        return sorted((key, value) for key, (value, _) in space.items())

    def purge_expired(self) -> int:
        """Drop every expired entry now; returns how many were dropped."""
        now = self._clock()
        dropped = 0
        for space in self._data.values():
            dead = [key for key, (_, exp) in space.items() if exp is not None and exp <= now]
            for key in dead:
                del space[key]
            dropped += len(dead)
        self._next_purge = now + self._purge_interval
        return dropped

    async def close(self) -> None:
        self._closed = True
        self._data.clear()
