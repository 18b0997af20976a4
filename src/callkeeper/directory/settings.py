"""The registrar's and the authentication policy's tunables, and where they come from.

Proposed configuration (TOML), next to the existing `[keepalive] flow_timer`:

    [registrar]
    min_expires = 60        # below this a REGISTER gets 423 Interval Too Brief (RFC 3261 §10.3)
    default_expires = 3600  # when neither the Contact nor the request says
    max_expires = 7200      # longer requests are shortened to this
    max_contacts = 10       # bindings per user; the least recently refreshed one makes room

    [auth]
    max_failures = 3        # consecutive digest failures per (user, source IP) before 403
    failure_window = 60     # s: failures further apart than this do not add up
    block_time = 300        # s: how long that pair keeps getting 403
    nonce_ttl = 300         # s: a nonce older than this is answered stale=true

Until `config.py` grows those sections, `from_config` reads them when present and falls back to
these defaults, so the directory package works with today's configuration model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Self

# RFC 3261 §10.3: 423 is only allowed for intervals shorter than an hour.
_MAX_MIN_EXPIRES = 3600


def _section(config: Any, name: str) -> dict[str, Any]:
    section = getattr(config, name, None)
    if section is None:
        return {}
    if isinstance(section, dict):
        return section
    dump = getattr(section, "model_dump", None)
    return dict(dump()) if callable(dump) else dict(vars(section))


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    """Expiry limits (seconds), the per-user contact limit and the RFC 5626 Flow-Timer."""

    min_expires: int = 60
    default_expires: int = 3600
    max_expires: int = 7200
    max_contacts: int = 10
    flow_timer: int = 30

    def __post_init__(self) -> None:
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError(
                "registrar: need 0 < min_expires <= default_expires <= max_expires, got "
                f"{self.min_expires}, {self.default_expires}, {self.max_expires}"
            )
        if self.min_expires > _MAX_MIN_EXPIRES:
            raise ValueError("registrar.min_expires may not exceed 3600 (RFC 3261 §10.3)")
        if self.max_contacts < 1 or self.flow_timer < 1:
            raise ValueError("registrar.max_contacts and keepalive.flow_timer must be positive")

    @classmethod
    def from_config(cls, config: Any) -> Self:
        """`[registrar]` keys when the config has them; `flow_timer` from `[keepalive]`."""
        known = {field.name for field in fields(cls)}
        values = {k: v for k, v in _section(config, "registrar").items() if k in known}
        values["flow_timer"] = int(config.keepalive.flow_timer)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Brute-force limits of `AuthPolicy` and the nonce lifetime of its authenticator."""

    max_failures: int = 3
    failure_window: float = 60.0
    block_time: float = 300.0
    nonce_ttl: float = 300.0
    max_tracked_pairs: int = 10_000

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.max_tracked_pairs < 1:
            raise ValueError("auth.max_failures must be at least 1")
        if self.failure_window <= 0 or self.block_time <= 0 or self.nonce_ttl <= 0:
            raise ValueError("auth.failure_window, block_time and nonce_ttl must be positive")

    @classmethod
    def from_config(cls, config: Any) -> Self:
        known = {field.name for field in fields(cls)}
        return cls(**{k: v for k, v in _section(config, "auth").items() if k in known})
