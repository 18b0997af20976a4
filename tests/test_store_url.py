"""`[store] url` parsing: every accepted form, and a ValueError that names the problem otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from callkeeper.store import MemoryStore, SqliteStore, StoreLocation, open_store, parse_store_url
from callkeeper.store.redis import RedisStore


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory:", StoreLocation("memory")),
        ("MEMORY:", StoreLocation("memory")),
        (
            "sqlite:///callkeeper-data/ck.db",
            StoreLocation("sqlite", path=Path("callkeeper-data/ck.db")),
        ),
        ("sqlite:////var/lib/ck/ck.db", StoreLocation("sqlite", path=Path("/var/lib/ck/ck.db"))),
        ("redis://127.0.0.1:6380/2", StoreLocation("redis", host="127.0.0.1", port=6380, db=2)),
        ("redis://cache.internal", StoreLocation("redis", host="cache.internal", port=6379, db=0)),
        ("redis://[::1]:7000/", StoreLocation("redis", host="::1", port=7000, db=0)),
        (
            "redis://ck:p%40ss@db:6379/1",
            StoreLocation("redis", host="db", port=6379, db=1, username="ck", password="p@ss"),
        ),
        (
            "rediss://:secret@db:6380/0",
            StoreLocation("redis", host="db", port=6380, password="secret", ssl=True),
        ),
    ],
)
def test_accepted_urls(url: str, expected: StoreLocation) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty store URL"),
        ("   ", "empty store URL"),
        ("callkeeper.db", "has no scheme"),
        (":memory:", "has no scheme"),
        ("postgres://db/ck", "unknown scheme 'postgres'"),
        ("memory:extra", "memory: takes nothing after the colon"),
        ("sqlite:", "a SQLite URL has no host"),
        ("sqlite://host/ck.db", "a SQLite URL has no host"),
        ("sqlite:///", "has no database path"),
        ("sqlite:///ck.db?mode=ro", "no \\?query"),
        ("sqlite:///:memory:", "use memory:"),
        ("sqlite:///data/", "names a directory"),
        ("redis://", "has no host"),
        ("redis://:6379/0", "has no host"),
        ("redis://localhost:port/0", "invalid port 'port'"),
        ("redis://localhost:99999/0", "invalid port '99999'"),
        ("redis://localhost:0/0", "port 0"),
        ("redis://localhost:6379/zero", "invalid database 'zero'"),
        ("redis://localhost:6379/0/1", "invalid database '0/1'"),
        ("redis://localhost:6379/0?timeout=1", "no \\?query"),
    ],
)
def test_rejected_urls_name_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_store_url(url)
    with pytest.raises(ValueError, match=problem):
        open_store(url)


def test_a_password_never_appears_in_an_error() -> None:
    with pytest.raises(ValueError, match="invalid port") as failure:
        parse_store_url("redis://admin:hunter2@db:bad/0")
    assert "hunter2" not in str(failure.value)
    assert "***" in str(failure.value)


async def test_open_store_builds_the_backend_without_io(tmp_path: Path) -> None:
    memory = open_store("memory:")
    sqlite = open_store(f"sqlite:///{tmp_path / 'never' / 'ck.db'}")
    redis = open_store("redis://127.0.0.1:1/5")  # nothing listens on port 1: not contacted yet
    try:
        assert isinstance(memory, MemoryStore)
        assert isinstance(sqlite, SqliteStore)
        assert sqlite.path == tmp_path / "never" / "ck.db"
        assert not (tmp_path / "never").exists()  # connected (and created) on first use
        assert isinstance(redis, RedisStore)
        assert redis.address == "redis://127.0.0.1:1/5"
    finally:
        for store in (memory, sqlite, redis):
            await store.close()
