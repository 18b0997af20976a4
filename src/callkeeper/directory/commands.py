"""What the registrar asks of the io layer: keep the store in step with the bindings table.

Registrations must survive `kill -9` (issue 4), so every change is written through: the store
adapter encodes a saved binding with `encode_binding` and keys it by (user, key); `Registrar
.restore` reads them all back at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from callkeeper.directory.bindings import Binding


@dataclass(frozen=True, slots=True)
class SaveBinding:
    """Insert or overwrite the stored binding (user, binding.key)."""

    binding: Binding


@dataclass(frozen=True, slots=True)
class DeleteBinding:
    """Delete the stored binding (user, binding_key), if there is one."""

    user: str
    binding_key: str


RegistrarCommand = SaveBinding | DeleteBinding
