"""Persistence behind one small async interface: bytes under (namespace, key), optionally expiring.

Why a layer of its own: registrations must survive ``kill -9`` and a restart, and IVR checkpoints
must be readable by another node process after a node dies, but the pure core must not know
whether that happens in SQLite (one host, embedded default) or Redis (several nodes). The core
emits commands such as ``SaveBinding``; the asyncio driver in ``io/`` carries them out with a
`Store` opened from the config's ``[store] url``::

    async with open_store("sqlite:///callkeeper-data/callkeeper.db") as store:
        await store.put("bindings", aor, msgspec.msgpack.encode(binding), ttl=expires)
        saved = await store.scan("bindings")

Backends: `MemoryStore` (``memory:``), `SqliteStore` (``sqlite:///PATH``) and
``callkeeper.store.redis.RedisStore`` (``redis://HOST:PORT/DB``; not imported here, so that
processes that do not use Redis do not pay for importing redis-py).
"""

from callkeeper.store.base import Store, StoreClosedError, StoreError
from callkeeper.store.memory import MemoryStore
from callkeeper.store.sqlite import SqliteStore
from callkeeper.store.url import StoreLocation, open_store, parse_store_url

__all__ = [
    "MemoryStore",
    "SqliteStore",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreLocation",
    "open_store",
    "parse_store_url",
]
