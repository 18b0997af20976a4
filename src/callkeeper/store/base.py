"""The one small persistence interface every backend implements, and its errors.

Why so small: the registrar, the IVR checkpointer and (later) voicemail only need "remember these
bytes under this name, maybe for this long". Keeping the contract to put/get/delete/scan with an
optional TTL lets one test suite hold every backend to the same behaviour, and keeps SQL and Redis
details out of the callers. Values are opaque bytes: callers encode them with msgspec, so the store
never needs a schema migration when a record gains a field.

Rules every backend follows (the contract tests in tests/test_store.py check each one):

- A namespace is 1-64 characters of ``A-Z a-z 0-9 _ . -``. It names a kind of record
  (``bindings``, ``ivr``) and becomes part of a Redis key and of a SCAN pattern, so characters
  that are glob syntax or the key separator (``*?[]\\:``) are refused everywhere, not just in Redis.
- A key is any string; a value is ``bytes`` (not bytearray/memoryview, which could change after
  the call returns).
- ``ttl`` is seconds (> 0, finite) or ``None`` for "keep until deleted". Every ``put`` replaces
  both the value and the TTL, so a ``put`` without ``ttl`` makes an entry permanent again.
- An entry whose TTL has run out is invisible at once to ``get``, ``scan`` and ``delete``
  (``delete`` returns False for it); backends remove the dead rows lazily.
- ``scan`` returns ``(key, value)`` pairs sorted by key, so callers and tests see a stable order.
- Once ``put``/``delete`` has returned, the change is visible to every later ``get``, from this
  process or another one sharing the same database.
- Errors from the database (locked, unreachable, disk full) surface as `StoreError`; bad arguments
  as `ValueError`/`TypeError`; using a closed store as `StoreClosedError`.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class StoreError(Exception):
    """The database failed to do what was asked (locked, unreachable, I/O error ...)."""


class StoreClosedError(StoreError):
    """The store was used after `close()`; open a new one with `open_store()`."""


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or _NAMESPACE.fullmatch(namespace) is None:
        raise ValueError(
            f"invalid store namespace {namespace!r}: use 1-64 characters of A-Z a-z 0-9 _ . -"
        )
    return namespace


def check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"store keys are str, not {type(key).__name__}")
    return key


def check_value(value: bytes) -> bytes:
    if type(value) is not bytes:
        raise TypeError(f"store values are bytes, not {type(value).__name__}: encode them first")
    return value


def check_ttl(ttl: float | None) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive, finite number of seconds (or None), not {ttl!r}")
    return float(ttl)


class Store(ABC):
    """Bytes under ``(namespace, key)``, optionally expiring. See the module docstring for rules.

    Use ``async with open_store(url) as store:`` or call `close()` yourself; backends connect
    lazily on first use, so constructing one never blocks and never fails on I/O.
    """

    @abstractmethod
    async def put(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value``; with ``ttl`` it disappears that many seconds from now."""

    @abstractmethod
    async def get(self, namespace: str, key: str) -> bytes | None:
        """The live value, or None when absent or expired."""

    @abstractmethod
    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the entry; True when a live entry was there."""

    @abstractmethod
    async def scan(self, namespace: str) -> list[tuple[str, bytes]]:
        """Every live ``(key, value)`` of the namespace, sorted by key."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release the connection. Safe to call twice."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
