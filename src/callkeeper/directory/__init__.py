"""Users, their devices and registrations, and who may use them.

- `users`: the `Directory` built from `[[users]]`/`[[trunks]]`/`[sip]` (credentials, fallbacks,
  static contacts, trusted networks, Request-URI resolution); rebuilt and swapped on reload.
- `trunks`: trunks and longest-prefix number routing.
- `registrar`: the RFC 3261 §10.3 / RFC 5626 registrar over a table of `Binding`s, which
  outlives reloads and is persisted through `SaveBinding`/`DeleteBinding` commands.
- `auth`: the digest authentication policy for REGISTER and out-of-dialog requests.

Pure: `now` and random bytes come in, events and commands go out.
"""

from callkeeper.directory.auth import AuthDecision, AuthPolicy
from callkeeper.directory.bindings import Binding, decode_binding, encode_binding, endpoint_id
from callkeeper.directory.commands import DeleteBinding, RegistrarCommand, SaveBinding
from callkeeper.directory.events import (
    BindingAdded,
    BindingRefreshed,
    BindingRemoved,
    RegistrarEvent,
)
from callkeeper.directory.registrar import Registrar
from callkeeper.directory.settings import AuthSettings, RegistrarSettings
from callkeeper.directory.trunks import Trunk, normalize_number
from callkeeper.directory.users import (
    Directory,
    DirectoryError,
    NotFound,
    NumberTarget,
    StaticContact,
    Target,
    User,
    UserTarget,
)

__all__ = [
    "AuthDecision",
    "AuthPolicy",
    "AuthSettings",
    "Binding",
    "BindingAdded",
    "BindingRefreshed",
    "BindingRemoved",
    "DeleteBinding",
    "Directory",
    "DirectoryError",
    "NotFound",
    "NumberTarget",
    "Registrar",
    "RegistrarCommand",
    "RegistrarEvent",
    "RegistrarSettings",
    "SaveBinding",
    "StaticContact",
    "Target",
    "Trunk",
    "User",
    "UserTarget",
    "decode_binding",
    "encode_binding",
    "endpoint_id",
    "normalize_number",
]
