"""`[store] url` → a `Store`: the only place that knows the URL syntax.

Accepted forms (anything else is a `ValueError` that names the problem, with any password masked):

- ``memory:`` — `MemoryStore`, gone when the process exits.
- ``sqlite:///relative/path.db`` (relative to the current directory at `open_store` time) or
  ``sqlite:////absolute/path.db`` — the SQLAlchemy convention, so ``sqlite:///`` + a path.
- ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` — defaults 6379 and 0; ``rediss://`` for TLS.

Parsing is separate from opening (`parse_store_url`) so config validation can reject a bad URL
without touching a file or a socket. `open_store` itself does no I/O either: backends connect on
first use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from callkeeper.store.base import Store

FORMS = "memory:, sqlite:///PATH or redis://HOST:PORT/DB"


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """A parsed store URL. ``path`` is for sqlite; host..ssl are for redis."""

    kind: Literal["memory", "sqlite", "redis"]
    path: Path | None = None
    host: str = ""
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def _masked(url: str) -> str:
    """The URL as it may appear in an error message or a log: no password."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def parse_store_url(url: str) -> StoreLocation:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"empty store URL: use {FORMS}")
    shown = repr(_masked(url))
    scheme, sep, _ = url.partition(":")
    if not sep or not scheme:
        raise ValueError(f"store URL {shown} has no scheme: use {FORMS}")
    scheme = scheme.lower()
    if scheme == "memory":
        if url.lower() != "memory:":
            raise ValueError(f"store URL {shown}: memory: takes nothing after the colon")
        return StoreLocation("memory")
    if scheme == "sqlite":
        return _parse_sqlite(url, shown)
    if scheme in ("redis", "rediss"):
        return _parse_redis(url, shown, ssl=scheme == "rediss")
    raise ValueError(f"store URL {shown} has unknown scheme {scheme!r}: use {FORMS}")


def _parse_sqlite(url: str, shown: str) -> StoreLocation:
    if not url.lower().startswith("sqlite:///"):
        raise ValueError(
            f"store URL {shown}: a SQLite URL has no host; write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = url[len("sqlite:///") :]
    if not path:
        raise ValueError(f"store URL {shown} has no database path after sqlite:///")
    if "?" in path or "#" in path:
        raise ValueError(f"store URL {shown}: SQLite URLs take no ?query or #fragment")
    if path == ":memory:":
        raise ValueError(f"store URL {shown}: use memory: for a store that is not kept on disk")
    if path.endswith("/"):
        raise ValueError(f"store URL {shown} names a directory, not a database file")
    return StoreLocation("sqlite", path=Path(path))


def _parse_redis(url: str, shown: str, *, ssl: bool) -> StoreLocation:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"store URL {shown}: Redis URLs take no ?query or #fragment")
    if not parts.hostname:
        raise ValueError(f"store URL {shown} has no host: use redis://HOST:PORT/DB")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ValueError(
            f"store URL {shown} has an invalid port {port_text!r}: use a number 1-65535"
        ) from None
    if port == 0:
        raise ValueError(f"store URL {shown} has port 0: use a number 1-65535")
    db_text = parts.path.removeprefix("/")
    if db_text and not (db_text.isascii() and db_text.isdigit()):
        raise ValueError(
            f"store URL {shown} has an invalid database {db_text!r}: "
            "the path must be a database number, as in redis://HOST:PORT/0"
        )
    return StoreLocation(
        "redis",
        host=parts.hostname,
        port=6379 if port is None else port,
        db=int(db_text) if db_text else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ssl=ssl,
    )


def open_store(url: str) -> Store:
    """The `Store` for a ``[store] url``; raises ValueError for a malformed URL. No I/O here."""
    location = parse_store_url(url)
    if location.kind == "memory":
        from callkeeper.store.memory import MemoryStore

        return MemoryStore()
    if location.kind == "sqlite":
        from callkeeper.store.sqlite import SqliteStore

        assert location.path is not None
        return SqliteStore(Path.cwd() / location.path)  # absolute: a later chdir changes nothing
    from callkeeper.store.redis import RedisStore  # imports redis only when it is used

    return RedisStore(
        host=location.host,
        port=location.port,
        db=location.db,
        username=location.username,
        password=location.password,
        ssl=location.ssl,
    )
