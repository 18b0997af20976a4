"""Run baresip (Debian's baresip-core 1.0) as a real SIP phone and drive it over ctrl_tcp.

One `Baresip` is one process with its own config directory: it registers to callkeeper with digest
auth over UDP or TCP, sends a sine tone (ausine) and dumps what it receives and sends as WAV files
(sndfile) into `workdir/wav`. `BaresipCtl` is a small client for the ctrl_tcp module's JSON
netstrings (`len:JSON,`): commands are the menu module's (`dial`, `hangup`, `accept`, ...).

Traps met (see shared/peers/README.md §2):
- `sip_listen PORT` also takes PORT+1 for SIP/TLS, so every instance gets a block of ports:
  SIP = base, TLS = base+1, ctrl_tcp = base+5, RTP = base+6 .. base+BLOCK-1.
- baresip 1.0 only REGISTERs through an `outbound=` proxy with `sipnat=outbound`.
- the first SIGTERM is graceful (it un-REGISTERs) and can hang while calls are pending; the second
  exits at once.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.ports import port_free

BLOCK = 16  # ports per instance
# Below Linux's ephemeral range (32768-60999) and callkeeper's default media range
# (20000-29999), above free_port()'s area (support/ports.py).
_PORT_AREA = (11000, 19984)
_reserved_bases: set[int] = set()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REG_ERROR = re.compile(r"^reg: sip:\S+: ")


def baresip_binary() -> str:
    path = shutil.which("baresip")
    if path is None:
        pytest.fail("baresip is not installed: run `make test` (it installs baresip-core)")
    return path


def reserve_port_block(size: int = BLOCK) -> int:
    """The first port of `size` consecutive ports free for UDP and TCP on 127.0.0.1 right now,
    never handed out twice in one test process (other test runs on the machine are avoided by
    probing and by picking the block at random)."""
    low, high = _PORT_AREA
    bases = list(range(low, high - size, size))
    random.shuffle(bases)
    for base in bases:
        if base in _reserved_bases:
            continue
        if all(port_free(port) for port in range(base, base + size)):
            _reserved_bases.add(base)
            return base
    raise RuntimeError("no free block of ports for baresip")


class BaresipCtl:
    """A client for baresip's ctrl_tcp: JSON in netstrings. Events that arrive while waiting for
    something else are queued, so none is lost; `history` keeps every event seen."""

    def __init__(self, port: int, connect_timeout: float = 10.0) -> None:
        deadline = time.monotonic() + connect_timeout
        while True:  # baresip may still be loading its modules
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.port = port
        self._buffer = b""
        self._tokens = itertools.count(1)
        self.pending: list[dict[str, Any]] = []  # events not consumed by wait_event yet
        self.history: list[dict[str, Any]] = []  # every event, for failure messages

    def close(self) -> None:
        self.sock.close()

    def _read_message(self, deadline: float) -> dict[str, Any] | None:
        """One decoded netstring, or None when the deadline passes first."""
        while True:
            colon = self._buffer.find(b":")
            if colon > 0:
                length = int(self._buffer[:colon])
                end = colon + 1 + length
                if len(self._buffer) > end:
                    if self._buffer[end : end + 1] != b",":
                        raise ValueError(f"bad netstring from baresip: {self._buffer[:80]!r}")
                    data = self._buffer[colon + 1 : end]
                    self._buffer = self._buffer[end + 1 :]
                    message: dict[str, Any] = json.loads(data.decode("utf-8", "replace"))
                    if message.get("event"):
                        self.history.append(message)
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("baresip closed the ctrl_tcp connection")
            self._buffer += chunk

    def command(
        self, command: str, params: str | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        token = f"t{next(self._tokens)}"
        request: dict[str, Any] = {"command": command, "token": token}
        if params is not None:
            request["params"] = params
        data = json.dumps(request).encode()
        self.sock.sendall(b"%d:%s," % (len(data), data))
        deadline = time.monotonic() + timeout
        while (message := self._read_message(deadline)) is not None:
            if message.get("response") and message.get("token") == token:
                return message
            if message.get("event"):
                self.pending.append(message)
        raise TimeoutError(f"baresip (ctrl {self.port}) did not answer {command!r} in {timeout} s")

    def wait_event(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of this type (queued ones first); AssertionError after `timeout`."""
        for index, event in enumerate(self.pending):
            if event.get("type") == type_:
                return self.pending.pop(index)
        deadline = time.monotonic() + timeout
        while (message := self._read_message(deadline)) is not None:
            if not message.get("event"):
                continue
            if message.get("type") == type_:
                return message
            self.pending.append(message)
        seen = [(e.get("type"), e.get("param")) for e in self.history]
        raise AssertionError(
            f"no {type_} from baresip (ctrl {self.port}) in {timeout} s; events: {seen}"
        )

    def dial(self, uri: str) -> dict[str, Any]:
        return self.command("dial", uri)

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def accept(self) -> dict[str, Any]:
        return self.command("accept")

    def list_calls(self) -> str:
        """The menu's `listcalls` text: one line per call (empty-ish when there is none)."""
        return str(self.command("listcalls").get("data", ""))


@dataclass
class Baresip:
    """One baresip phone `name@127.0.0.1` registered to callkeeper at `registrar_port`.
    Use as a context manager; `ctl` is connected once started."""

    workdir: Path
    name: str
    registrar_port: int
    password: str
    transport: str = "udp"
    tone_hz: int = 1000
    answermode: str = "auto"
    regint: int = 60
    apps: tuple[str, ...] = ()  # more application modules, e.g. "mwi.so"
    base_port: int = field(default_factory=reserve_port_block)
    process: subprocess.Popen[bytes] | None = None
    ctl: BaresipCtl | None = None

    @property
    def sip_port(self) -> int:
        return self.base_port

    @property
    def ctrl_port(self) -> int:
        return self.base_port + 5

    @property
    def rtp_ports(self) -> tuple[int, int]:
        return self.base_port + 6, self.base_port + BLOCK - 1

    @property
    def wav_dir(self) -> Path:
        return self.workdir / "wav"

    @property
    def log_path(self) -> Path:
        return self.workdir / "baresip.log"

    def write_config(self) -> None:
        self.wav_dir.mkdir(parents=True, exist_ok=True)
        low, high = self.rtp_ports
        lines = [
            ("poll_method", "epoll"),
            ("sip_listen", f"127.0.0.1:{self.sip_port}"),
            ("net_interface", "127.0.0.1"),
            ("call_local_timeout", "120"),
            ("call_max_calls", "4"),
            # ausine only produces 48 kHz stereo: baresip resamples it for G.711
            ("audio_source", f"ausine,{self.tone_hz}"),
            ("ausrc_srate", "48000"),
            ("ausrc_channels", "2"),
            # no sound card: the player and the ring tones go to aubridge devices nobody reads
            ("audio_player", f"aubridge,{self.name}-{self.base_port}-play"),
            ("audio_alert", f"aubridge,{self.name}-{self.base_port}-alert"),
            ("audio_level", "no"),
            ("rtp_ports", f"{low}-{high}"),
            ("rtcp_mux", "no"),
            ("jitter_buffer_delay", "1-10"),
            ("module_path", "/usr/lib/baresip/modules"),
            ("module", "g711.so"),
            ("module", "ausine.so"),
            ("module", "aubridge.so"),
            ("module", "sndfile.so"),
            ("snd_path", str(self.wav_dir)),
            ("module_tmp", "uuid.so"),
            ("module_tmp", "account.so"),
            ("module_app", "menu.so"),
            ("module_app", "ctrl_tcp.so"),
            *(("module_app", app) for app in self.apps),
            ("ctrl_tcp_listen", f"127.0.0.1:{self.ctrl_port}"),
        ]
        (self.workdir / "config").write_text("".join(f"{k}\t\t{v}\n" for k, v in lines))
        registrar = f"127.0.0.1:{self.registrar_port}"
        account = (
            f"<sip:{self.name}@{registrar};transport={self.transport}>"
            f";auth_user={self.name};auth_pass={self.password};regint={self.regint}"
            f';sipnat=outbound;outbound="sip:{registrar};transport={self.transport}"'
            f";answermode={self.answermode};audio_codecs=PCMU,PCMA"
        )
        (self.workdir / "accounts").write_text(account + "\n")
        (self.workdir / "contacts").write_text("")

    @property
    def aor(self) -> str:
        return f"sip:{self.name}@127.0.0.1:{self.registrar_port}"

    def start(self, *, keep_log: bool = False) -> Baresip:
        """Write the config and run baresip. Starting again after `kill()` reuses the workdir:
        the same ports, account and `uuid` file (so the same +sip.instance: callkeeper sees the
        same endpoint come back); `keep_log` appends to the old log instead of replacing it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self._log = self.log_path.open("ab" if keep_log else "wb")
        # -s: SIP trace on stdout, so the log holds every message sent and received
        self.process = subprocess.Popen(
            [baresip_binary(), "-f", str(self.workdir), "-s"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        try:
            self.ctl = BaresipCtl(self.ctrl_port)
        except OSError:
            self.stop()
            raise AssertionError(
                f"baresip {self.name} never opened ctrl_tcp:\n{self.log()[-3000:]}"
            ) from None
        return self

    def stop(self) -> int:
        """SIGTERM (graceful: un-REGISTER), then a second SIGTERM, which exits at once; only the
        process started here is signalled, by its PID."""
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        assert self.process is not None
        code: int | None = None
        for grace in (1.5, 5.0):
            if self.process.poll() is not None:
                break
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.process.wait(grace)
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait()
        self._log.close()
        return code

    def kill(self) -> int:
        """SIGKILL, as a crash or power cut: no un-REGISTER, no BYE; its sockets close (so
        what is sent to it meets ICMP port unreachable). Only this process, by its PID."""
        assert self.process is not None
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        code = self.process.wait()
        self._log.close()
        return code

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def registration_errors(self) -> list[str]:
        """baresip's own reports of a failed REGISTER (`reg: AOR: reason`), ANSI colours removed."""
        text = _ANSI.sub("", self.log())
        return [line.strip() for line in text.splitlines() if _REG_ERROR.search(line)]

    def wav_files(self, kind: str) -> list[Path]:
        """sndfile's dumps: kind "dec" = what this phone received, "enc" = what it sent."""
        return sorted(self.wav_dir.glob(f"dump-*-{kind}.wav"))
