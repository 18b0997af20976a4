"""The configuration model: a TOML file (keys as in DESIGN.md), overridable by CALLKEEPER_* env vars.

`load_config` turns every problem into a `ConfigError` whose message is one line naming the key,
which the CLI prints before exiting with status 2.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
_LISTEN_RE = re.compile(r"(udp|tcp|tls|wss|ws):(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})")


class ConfigError(Exception):
    """A bad configuration: the message is one line that names the key."""


class ListenAddress(BaseModel):
    model_config = ConfigDict(frozen=True)

    transport: Literal["udp", "tcp", "tls", "ws", "wss"]
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        match = _LISTEN_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"{text!r} is not TRANSPORT:HOST:PORT with TRANSPORT one of {TRANSPORTS}"
            )
        transport, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
        if port > 65535:
            raise ValueError(f"port {port} out of range in {text!r}")
        return cls(transport=transport, host=host, port=port)  # type: ignore[arg-type]

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def _check_positive(value: float, name: str) -> float:
    if value <= 0:
        raise ValueError(f"{name} must be greater than 0")
    return value


class SipSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: list[ListenAddress] = Field(
        default_factory=lambda: [
            ListenAddress.parse("udp:127.0.0.1:5060"),
            ListenAddress.parse("tcp:127.0.0.1:5060"),
        ]
    )
    domain: str = "127.0.0.1"
    trusted_sources: list[str] = Field(default_factory=list)
    # RFC 3261 §17 timer base values (seconds); the transaction timers A–K derive from them.
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # A stream connection with nothing received for this long is closed (a half-sent message too).
    tcp_idle_timeout: float = 120.0
    # A message that has started arriving on a stream must complete within this long.
    tcp_message_timeout: float = 32.0
    user_agent: str = "callkeeper"

    @field_validator("listen", mode="before")
    @classmethod
    def _parse_listen(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [ListenAddress.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("trusted_sources")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("t1", "t2", "t4", "tcp_idle_timeout", "tcp_message_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        return _check_positive(value, "value")

    @model_validator(mode="after")
    def _check(self) -> SipSection:
        if not self.listen:
            raise ValueError("listen: at least one address is needed")
        if self.t2 < self.t1:
            raise ValueError("t2 must not be smaller than t1")
        if any(item.transport in ("tls", "wss") for item in self.listen) and not (
            self.tls_cert and self.tls_key
        ):
            raise ValueError("tls_cert and tls_key are required for a tls: or wss: listen address")
        return self


class KeepaliveSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow_timer: int = Field(default=30, gt=0)
    options_interval: float = Field(default=30.0, gt=0)
    in_call_interval: float = Field(default=5.0, gt=0)
    misses: int = Field(default=3, ge=1)
    # In-dialog OPTIONS to each leg of an established call (calls/dialog_audit.py); 0 turns it off.
    dialog_interval: float = Field(default=60.0, ge=0)


FallbackStep = Literal["devices", "mobile", "voicemail"]
DEFAULT_FALLBACK: tuple[FallbackStep, ...] = ("devices", "mobile", "voicemail")


class RecoverySection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace: float = Field(default=30.0, ge=0)
    announce: bool = True
    fallback: list[FallbackStep] = Field(default_factory=lambda: list(DEFAULT_FALLBACK))
    ring_timeout: float = Field(default=20.0, gt=0)
    feature_code: Annotated[str, Field(min_length=1, pattern=r"^[0-9*#A-Za-z]+$")] = "*86"
    # Where the `voicemail` fallback step sends a call until the built-in voicemail arrives
    # with the media plane: a SIP URI of a voicemail server (a host name is resolved, see
    # [dns]); the failed user's name becomes its user part (the mailbox) unless the URI has one.
    voicemail_uri: str | None = None

    @field_validator("voicemail_uri")
    @classmethod
    def _sip_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from callkeeper.sip.errors import ParseError
        from callkeeper.sip.uri import parse_uri

        try:
            uri = parse_uri(value)
        except ParseError as error:
            raise ValueError(f"not a SIP URI: {error.reason}") from None
        if not uri.is_sip:
            raise ValueError("must be a sip: or sips: URI")
        from callkeeper.sip.locate import host_name_problem

        problem = host_name_problem(uri.host)
        if problem is not None:
            raise ValueError(problem)
        return value


class MediaSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # relay: the built-in RTP relay; rtpengine: rtpengine over NG; off: SDP passes through.
    mode: Literal["relay", "rtpengine", "off"] = "off"
    rtp_ports: str = "20000-29999"
    # The IP phones send RTP to (relay mode); default: the first non-wildcard SIP listen host.
    address: str | None = None
    # Where the built-in voicemail keeps its messages (relative to the config file's folder).
    voicemail_dir: Path = Path("callkeeper-data/voicemail")

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError("must be an IP address") from None
        return value

    # rtpengine's NG control socket (media.mode = "rtpengine").
    rtpengine: str = "udp:127.0.0.1:2223"

    # Where callkeeper listens for the keys rtpengine saw (its --dtmf-log-dest); None: not at all.
    rtpengine_dtmf: str | None = None

    @field_validator("rtpengine", "rtpengine_dtmf")
    @classmethod
    def _check_udp_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = re.fullmatch(r"udp:(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})", value.strip())
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ValueError("must look like 'udp:127.0.0.1:2223'")
        return value.strip()

    @property
    def rtpengine_address(self) -> tuple[str, int]:
        return _udp_address(self.rtpengine)

    @property
    def rtpengine_dtmf_address(self) -> tuple[str, int] | None:
        return _udp_address(self.rtpengine_dtmf) if self.rtpengine_dtmf else None

    @field_validator("rtp_ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", value.strip())
        if not match:
            raise ValueError("must look like '20000-29999'")
        low, high = int(match.group(1)), int(match.group(2))
        if not 1024 <= low < high <= 65535:
            raise ValueError("must be an increasing range within 1024-65535")
        return value


def _udp_address(text: str) -> tuple[str, int]:
    """`udp:HOST:PORT` (validated) → (HOST, PORT)."""
    host, _, port = text.removeprefix("udp:").rpartition(":")
    return host.strip("[]"), int(port)


class StoreSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = "sqlite:///callkeeper-data/callkeeper.db"

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value == "memory:" or value.startswith(("sqlite:///", "redis://")):
            return value
        raise ValueError("must be sqlite:///PATH, memory: or redis://HOST:PORT/DB")


class ApiSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = "127.0.0.1:8080"
    token: str | None = None

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT")
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class LogSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class RegistrarSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_expires: int = Field(default=60, gt=0, le=3600)
    default_expires: int = Field(default=3600, gt=0)
    max_expires: int = Field(default=7200, gt=0)
    max_contacts: int = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RegistrarSection:
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need min_expires <= default_expires <= max_expires")
        return self


DigestAlgorithm = Literal["SHA-256", "MD5"]
DEFAULT_DIGEST: tuple[DigestAlgorithm, ...] = ("MD5",)


class AuthSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_failures: int = Field(default=3, gt=0)  # consecutive failures per (user, IP) before 403
    failure_window: float = Field(default=60.0, gt=0)
    block_time: float = Field(default=300.0, ge=0)
    nonce_ttl: float = Field(default=300.0, gt=0)
    # Digest algorithms offered, in order. MD5 alone by default: deployed phones (baresip 1.0 on
    # libre 1.1, among others) give up on a 401 that offers any algorithm they do not know, even
    # next to MD5. Offer ["SHA-256", "MD5"] (RFC 8760 order) when every phone copes.
    algorithms: list[DigestAlgorithm] = Field(
        default_factory=lambda: list(DEFAULT_DIGEST), min_length=1
    )


def parse_dns_server(text: str) -> tuple[str, int]:
    """`IP`, `IP:PORT`, `IPv6` or `[IPv6]:PORT` → (IP, PORT), port 53 unless given."""
    host, port_text = text.strip(), ""
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not IP or IP:PORT")
        port_text = rest[1:]
    elif host.count(":") == 1:  # more than one colon: a bare IPv6 address
        host, _, port_text = host.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not IP or IP:PORT") from None
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"{text!r}: bad port {port_text!r}")
    return host, int(port_text or 53)


class DnsSection(BaseModel):
    """Where host names in SIP URIs (trunks, static contacts, voicemail_uri) are resolved."""

    model_config = ConfigDict(extra="forbid")

    # Resolvers to ask (IP or IP:PORT); empty: the system's (/etc/resolv.conf).
    servers: list[str] = Field(default_factory=list)
    # Answers are kept for their TTL clamped to [min_ttl, max_ttl]; a failed look-up is tried
    # again after min_ttl, and the last good answer stays in use meanwhile.
    min_ttl: float = Field(default=30.0, gt=0)
    max_ttl: float = Field(default=3600.0, gt=0)
    timeout: float = Field(default=2.0, gt=0)  # for one look-up, all servers and retries

    @field_validator("servers")
    @classmethod
    def _check_servers(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_dns_server(item)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> DnsSection:
        if self.max_ttl < self.min_ttl:
            raise ValueError("max_ttl must not be smaller than min_ttl")
        return self

    @property
    def server_addresses(self) -> list[tuple[str, int]]:
        return [parse_dns_server(item) for item in self.servers]


class UserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$")]
    password: str | None = None
    ha1: str | None = None
    mobile: str | None = None
    voicemail: bool = False
    static_contacts: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _credentials(self) -> UserConfig:
        if self.password is not None and self.ha1 is not None:
            raise ValueError("give password or ha1, not both")
        return self


class TrunkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    uri: str
    match: str = ""


class IvrSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = "ivr"
    script: Path | None = None


class Config(BaseSettings):
    """The whole configuration. Env: CALLKEEPER_SIP__DOMAIN=... overrides [sip] domain."""

    model_config = SettingsConfigDict(
        env_prefix="CALLKEEPER_", env_nested_delimiter="__", extra="forbid"
    )

    sip: SipSection = Field(default_factory=SipSection)
    keepalive: KeepaliveSection = Field(default_factory=KeepaliveSection)
    recovery: RecoverySection = Field(default_factory=RecoverySection)
    media: MediaSection = Field(default_factory=MediaSection)
    store: StoreSection = Field(default_factory=StoreSection)
    api: ApiSection = Field(default_factory=ApiSection)
    log: LogSection = Field(default_factory=LogSection)
    registrar: RegistrarSection = Field(default_factory=RegistrarSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    users: list[UserConfig] = Field(default_factory=list)
    trunks: list[TrunkConfig] = Field(default_factory=list)
    ivr: IvrSection = Field(default_factory=IvrSection)
    dns: DnsSection = Field(default_factory=DnsSection)

    @model_validator(mode="after")
    def _unique_users(self) -> Config:
        seen: set[str] = set()
        for index, user in enumerate(self.users):
            if user.name in seen:
                raise ValueError(f"users.{index}.name: duplicate user {user.name!r}")
            seen.add(user.name)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: an operator's CALLKEEPER_* override beats the file's value.
        return (env_settings, init_settings)


def demo_toml() -> str:
    return resources.files("callkeeper").joinpath("demo.toml").read_text(encoding="utf-8")


def load_config(path: Path | None) -> Config:
    """Load and validate; `None` means the embedded demo defaults. Raises ConfigError."""
    try:
        if path is None:
            data = tomllib.loads(demo_toml())
        else:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path or 'demo.toml'}: not valid TOML: {error}") from None
    try:
        config = Config(**data)
    except ValidationError as error:
        raise ConfigError(_one_line(error, path)) from None
    base = path.parent if path is not None else Path.cwd()
    if config.sip.tls_cert is not None:
        config.sip.tls_cert = _resolve(base, config.sip.tls_cert, "sip.tls_cert")
    if config.sip.tls_key is not None:
        config.sip.tls_key = _resolve(base, config.sip.tls_key, "sip.tls_key")
    if config.ivr.script is not None:
        config.ivr.script = base / config.ivr.script
        _check_ivr_script(config.ivr.script)
    if not config.media.voicemail_dir.is_absolute():
        config.media.voicemail_dir = base / config.media.voicemail_dir
    # Users' static contacts, mobiles and trunk URIs are checked where they are parsed.
    from callkeeper.directory import Directory, DirectoryError

    try:
        Directory.from_config(config)
    except DirectoryError as error:
        raise ConfigError(f"{path}: {error}" if path is not None else str(error)) from None
    return config


def _check_ivr_script(path: Path) -> None:
    """The IVR script must exist and validate; its errors name its own file and line."""
    from callkeeper.ivr.errors import ScriptError
    from callkeeper.ivr.script import load_script

    if not path.is_file():
        raise ConfigError(f"ivr.script: file {path} does not exist")
    try:
        load_script(path)
    except ScriptError as error:
        raise ConfigError(str(error)) from None


def _resolve(base: Path, value: Path, key: str) -> Path:
    resolved = value if value.is_absolute() else base / value
    if not resolved.is_file():
        raise ConfigError(f"{key}: file {resolved} does not exist")
    return resolved


def _one_line(error: ValidationError, path: Path | None) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    where = f"{path}: " if path is not None else ""
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}{key}: {message}{more}"
