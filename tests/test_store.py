"""The Store contract, run against every backend: memory, SQLite (tmp file), Redis (real server).

Also here: exact expiry with a fake clock (memory, SQLite) and the Redis key layout, since those
share this module's fixtures. SQLite across processes is in test_store_sqlite.py, URL parsing in
test_store_url.py. The Redis server is Debian's redis-server on a free port, one per module.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

from callkeeper.store import (
    MemoryStore,
    SqliteStore,
    Store,
    StoreClosedError,
    StoreError,
    open_store,
)
from callkeeper.store.redis import RedisStore
from support.ports import free_port
from support.redis_server import RedisServer, RedisServerMissing

BACKENDS = ["memory", "sqlite", "redis"]
DURABLE = ["sqlite", "redis"]


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except RedisServerMissing as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


def url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory:"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    return server.url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_for(request.param, request, tmp_path)


@pytest.fixture(params=DURABLE)
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_for(request.param, request, tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0
) -> float:
    """Poll `check` until it is true; return the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


# --- the contract: basic operations -----------------------------------------------------------
async def test_open_store_picks_the_backend_for_the_url(store: Store, store_url: str) -> None:
    expected = {"memory": MemoryStore, "sqlite": SqliteStore, "redis": RedisStore}
    assert isinstance(store, expected[store_url.partition(":")[0]])


async def test_get_of_a_missing_key_is_none(store: Store) -> None:
    assert await store.get("bindings", "nobody") is None


async def test_put_then_get_round_trips_any_bytes(store: Store) -> None:
    values = {"all": bytes(range(256)), "empty": b"", "big": random.randbytes(1 << 20)}
    for key, value in values.items():
        await store.put("blobs", key, value)
    for key, value in values.items():
        got = await store.get("blobs", key)
        assert got == value
        assert type(got) is bytes


async def test_put_replaces_the_value(store: Store) -> None:
    await store.put("bindings", "alice", b"old")
    await store.put("bindings", "alice", b"new")
    assert await store.get("bindings", "alice") == b"new"
    assert await store.scan("bindings") == [("alice", b"new")]


async def test_delete_reports_whether_an_entry_was_there(store: Store) -> None:
    await store.put("bindings", "alice", b"x")
    assert await store.delete("bindings", "alice") is True
    assert await store.get("bindings", "alice") is None
    assert await store.delete("bindings", "alice") is False
    assert await store.delete("never", "seen") is False


async def test_namespaces_do_not_see_each_other(store: Store) -> None:
    # "bind" is a prefix of "bindings" and "a" of "a.b": a sloppy LIKE/glob would mix them up.
    for namespace in ("bind", "bindings", "a", "a.b"):
        await store.put(namespace, "k", namespace.encode())
    assert await store.get("bind", "k") == b"bind"
    assert await store.scan("bind") == [("k", b"bind")]
    assert await store.scan("a") == [("k", b"a")]
    assert await store.delete("bindings", "k") is True
    assert await store.get("bind", "k") == b"bind"
    assert await store.scan("bindings") == []


async def test_keys_may_contain_any_character(store: Store) -> None:
    keys = ["", "sip:alice@example.com;transport=tcp", "a:b:c", "*", "?[x]\\", "ck:ns:key", "☎ü"]
    for index, key in enumerate(keys):
        await store.put("odd", key, str(index).encode())
    for index, key in enumerate(keys):
        assert await store.get("odd", key) == str(index).encode()
    assert await store.scan("odd") == sorted((k, str(i).encode()) for i, k in enumerate(keys))


async def test_scan_returns_every_live_entry_sorted_by_key(store: Store) -> None:
    # More entries than one Redis SCAN step or MGET chunk (1000), written in random order.
    keys = [f"user{i:05d}" for i in range(2500)]
    shuffled = random.sample(keys, len(keys))
    await asyncio.gather(*(store.put("many", k, k.encode()) for k in shuffled))
    await store.put("other", "user00000", b"not in many")
    assert await store.scan("many") == [(k, k.encode()) for k in keys]


async def test_scan_of_an_empty_namespace_is_empty(store: Store) -> None:
    assert await store.scan("nothing-here") == []


async def test_concurrent_writes_all_land(store: Store) -> None:
    await asyncio.gather(*(store.put("ivr", f"call{i}", b"step%d" % i) for i in range(500)))
    entries = dict(await store.scan("ivr"))
    assert len(entries) == 500
    assert entries["call499"] == b"step499"


# --- the contract: TTL ------------------------------------------------------------------------
async def test_an_entry_with_a_ttl_expires_and_others_stay(store: Store) -> None:
    await store.put("bindings", "permanent", b"p")
    await store.put("bindings", "long", b"l", ttl=60)
    await store.put("bindings", "short", b"s", ttl=0.3)
    assert await store.get("bindings", "short") == b"s"

    async def short_gone() -> bool:
        return await store.get("bindings", "short") is None

    await eventually(short_gone, "the 0.3 s entry expires")
    assert await store.scan("bindings") == [("long", b"l"), ("permanent", b"p")]
    assert await store.delete("bindings", "short") is False


async def test_a_put_without_ttl_makes_an_entry_permanent_again(store: Store) -> None:
    await store.put("bindings", "alice", b"v1", ttl=0.3)
    await store.put("bindings", "alice", b"v2")
    await store.put("bindings", "witness", b"w", ttl=0.3)  # expires when alice's old TTL would

    async def witness_gone() -> bool:
        return await store.get("bindings", "witness") is None

    await eventually(witness_gone, "the witness entry expires")
    assert await store.get("bindings", "alice") == b"v2"


async def test_a_put_with_a_new_ttl_refreshes_the_entry(store: Store) -> None:
    # A phone re-registering: the binding's expiry moves forward.
    await store.put("bindings", "alice", b"v1", ttl=0.3)
    await store.put("bindings", "alice", b"v2", ttl=60)
    await store.put("bindings", "witness", b"w", ttl=0.3)

    async def witness_gone() -> bool:
        return await store.get("bindings", "witness") is None

    await eventually(witness_gone, "the witness entry expires")
    assert await store.scan("bindings") == [("alice", b"v2")]


async def test_fractional_ttl_is_honoured_not_rounded_to_seconds(store: Store) -> None:
    started = time.monotonic()
    await store.put("t", "k", b"v", ttl=0.25)

    async def gone() -> bool:
        return await store.get("t", "k") is None

    await eventually(gone, "the 0.25 s entry expires", timeout=0.95)  # < 1 s: not rounded up
    assert time.monotonic() - started >= 0.24


# --- the contract: arguments and lifecycle ----------------------------------------------------
@pytest.mark.parametrize("namespace", ["", "a:b", "reg*", "x[1]", "sp ace", "n" * 65, "☎"])
async def test_a_bad_namespace_is_a_value_error_naming_it(store: Store, namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        await store.put(namespace, "k", b"v")
    with pytest.raises(ValueError, match="namespace"):
        await store.scan(namespace)
    with pytest.raises(ValueError, match="namespace"):
        await store.get(namespace, "k")


@pytest.mark.parametrize("value", [bytearray(b"v"), memoryview(b"v"), "text", None])
async def test_a_value_that_is_not_bytes_is_a_type_error(store: Store, value: object) -> None:
    with pytest.raises(TypeError, match="bytes"):
        await store.put("ns", "k", value)  # type: ignore[arg-type]
    assert await store.get("ns", "k") is None


async def test_a_key_that_is_not_a_string_is_a_type_error(store: Store) -> None:
    with pytest.raises(TypeError, match="keys are str"):
        await store.put("ns", 42, b"v")  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [0, -1.0, math.nan, math.inf])
async def test_a_ttl_that_is_not_positive_and_finite_is_a_value_error(
    store: Store, ttl: float
) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.put("ns", "k", b"v", ttl=ttl)
    assert await store.get("ns", "k") is None


async def test_a_closed_store_refuses_every_operation(store_url: str) -> None:
    store = open_store(store_url)
    await store.put("ns", "k", b"v")
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(StoreClosedError):
        await store.get("ns", "k")
    with pytest.raises(StoreClosedError):
        await store.put("ns", "k", b"v")
    with pytest.raises(StoreClosedError):
        await store.delete("ns", "k")
    with pytest.raises(StoreClosedError):
        await store.scan("ns")
    assert issubclass(StoreClosedError, StoreError)


async def test_async_with_closes_the_store(store_url: str) -> None:
    async with open_store(store_url) as store:
        await store.put("ns", "k", b"v")
    with pytest.raises(StoreClosedError):
        await store.get("ns", "k")


async def test_a_store_used_before_any_io_can_be_closed(store_url: str) -> None:
    store = open_store(store_url)
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.scan("ns")


# --- durability: SQLite and Redis keep data across close/reopen and between clients ------------
async def test_data_survives_close_and_reopen(durable_url: str) -> None:
    async with open_store(durable_url) as first:
        await first.put("bindings", "alice", b"contact-a")
        await first.put("bindings", "bob", b"contact-b", ttl=60)
        await first.put("ivr", "call-1", b"step-3")
        assert await first.delete("bindings", "gone") is False
    async with open_store(durable_url) as second:
        assert await second.scan("bindings") == [("alice", b"contact-a"), ("bob", b"contact-b")]
        assert await second.get("ivr", "call-1") == b"step-3"


async def test_two_stores_on_one_url_see_each_others_writes(durable_url: str) -> None:
    async with open_store(durable_url) as node_a, open_store(durable_url) as node_b:
        for digit in "1234":
            await node_a.put("ivr", "call-7", f"menu/{digit}".encode())
            assert await node_b.get("ivr", "call-7") == f"menu/{digit}".encode()
        assert await node_b.delete("ivr", "call-7") is True
        assert await node_a.get("ivr", "call-7") is None


async def test_memory_store_starts_empty_every_time() -> None:
    async with open_store("memory:") as first:
        await first.put("bindings", "alice", b"x")
    async with open_store("memory:") as second:
        assert await second.scan("bindings") == []


# --- memory and SQLite expiry, to the instant, with a fake clock -------------------------------
class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, FakeClock]:
    clock = FakeClock()
    if request.param == "memory":
        return MemoryStore(clock=clock, purge_interval=100), clock
    return SqliteStore(tmp_path / "clocked.db", clock=clock, purge_interval=100), clock


async def test_an_entry_dies_exactly_at_its_expiry(clocked: tuple[Store, FakeClock]) -> None:
    store, clock = clocked
    async with store:
        await store.put("bindings", "alice", b"x", ttl=30)
        clock.now += 29.999
        assert await store.get("bindings", "alice") == b"x"
        assert await store.scan("bindings") == [("alice", b"x")]
        clock.now += 0.001
        assert await store.get("bindings", "alice") is None
        assert await store.scan("bindings") == []
        assert await store.delete("bindings", "alice") is False


async def test_expired_entries_are_purged_by_a_later_write(
    clocked: tuple[Store, FakeClock],
) -> None:
    store, clock = clocked
    async with store:
        await store.put("bindings", "old", b"x", ttl=10)
        await store.put("bindings", "kept", b"y")
        clock.now += 50
        await store.put("bindings", "trigger", b"z")  # before purge_interval: no sweep yet
        assert await stored_rows(store) == 3
        clock.now += 60  # now past purge_interval (100 s) since open
        await store.put("bindings", "trigger", b"z")
        assert await stored_rows(store) == 2
        assert await store.scan("bindings") == [("kept", b"y"), ("trigger", b"z")]


async def stored_rows(store: Store) -> int:
    """Rows physically present, expired or not (peeks inside on purpose)."""
    if isinstance(store, MemoryStore):
        return sum(len(space) for space in store._data.values())
    assert isinstance(store, SqliteStore)
    db = (await store._connection()).reader
    rows = list(await db.execute_fetchall("SELECT count(*) FROM entries"))
    return int(rows[0][0])


# --- Redis specifics ----------------------------------------------------------------------------
@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    redis_server.flush()
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=0)
    try:
        yield client
    finally:
        client.close()


async def test_redis_keeps_one_string_per_entry_with_a_native_ttl(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    async with open_store(redis_server.url) as store:
        await store.put("bindings", "sip:alice@example.com", b"c1", ttl=10)
        await store.put("ivr", "call-1", b"step")
    assert redis_client.get("ck:bindings:sip:alice@example.com") == b"c1"
    assert 0 < redis_client.pttl("ck:bindings:sip:alice@example.com") <= 10_000
    assert redis_client.pttl("ck:ivr:call-1") == -1  # no expiry
    assert sorted(redis_client.keys("*")) == [
        b"ck:bindings:sip:alice@example.com",
        b"ck:ivr:call-1",
    ]


async def test_redis_scan_ignores_keys_outside_the_namespace(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    redis_client.set("ck:bindingsX:k", b"other namespace")
    redis_client.set("ck:bindings", b"no key part")
    redis_client.set("other:bindings:k", b"other application")
    async with open_store(redis_server.url) as store:
        await store.put("bindings", "k", b"mine")
        assert await store.scan("bindings") == [("k", b"mine")]


async def test_redis_uses_the_database_number_from_the_url(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/3"
    async with open_store(url) as store:
        await store.put("ns", "k", b"in db 3")
    assert redis_client.get("ck:ns:k") is None  # db 0
    db3 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=3)
    try:
        assert db3.get("ck:ns:k") == b"in db 3"
    finally:
        db3.close()


async def test_unreachable_redis_is_a_store_error_that_names_the_address() -> None:
    port = free_port()  # nothing listens here
    store = open_store(f"redis://:hunter2@127.0.0.1:{port}/0")
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}/0") as failure:
        await store.put("ns", "k", b"v")
    assert "hunter2" not in str(failure.value)
    assert time.monotonic() - started < 10, "a dead Redis must fail fast, not hang"
    await store.close()
