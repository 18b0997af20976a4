"""Run the real `callkeeper serve` process on free ports and talk to its API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from support.ports import free_port


def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class PortTaken(Exception):
    """The server could not bind a port we probed as free."""


@dataclass
class ServerProcess:
    """A `callkeeper serve` child process. Use as a context manager."""

    workdir: Path
    extra_config: str = ""  # whole tables after [sip]
    sip_extra: str = ""  # more keys inside [sip]
    transports: tuple[str, ...] = ("udp", "tcp")
    listen_extra: tuple[str, ...] = ()  # more `sip.listen` addresses (a ws: on its own port)
    sip_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    store_url: str = "memory:"
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "callkeeper.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "callkeeper.log"

    def write_config(self) -> None:
        addresses = [f"{t}:127.0.0.1:{self.sip_port}" for t in self.transports]
        listen = ", ".join(f'"{address}"' for address in [*addresses, *self.listen_extra])
        text = (
            f'[sip]\nlisten = [{listen}]\ndomain = "127.0.0.1"\n{self.sip_extra}\n'
            f"{self.extra_config}\n"
            f'[api]\nlisten = "127.0.0.1:{self.api_port}"\n'
            f'[store]\nurl = "{self.store_url}"\n'
        )
        if "[sip]" in self.extra_config:
            raise ValueError("put [sip] keys in sip_extra")
        self.config_path.write_text(text)

    def start(self, attempts: int = 3) -> ServerProcess:
        """Start and wait until healthy. A port taken between probing and binding (another
        suite on the same machine) makes the server exit 2; then try fresh ports."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except PortTaken:
                if attempt == attempts - 1:
                    raise
                self.sip_port, self.api_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        env = {**os.environ, **self.env}
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callkeeper.cli", "serve", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )
        wait_until(self._healthy, 15, what="callkeeper /healthz")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = self.log()
            if self.process.returncode == 2 and "bind" in log:
                self._log.close()
                raise PortTaken(log)
            raise AssertionError(f"callkeeper exited {self.process.returncode}:\n{log}")
        try:
            return bool(self.get_json("/healthz")["status"] == "ok")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- API ------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def get_json(self, path: str) -> dict:  # type: ignore[type-arg]
        with urllib.request.urlopen(self.url(path), timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as {'name{labels}': value}."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`callkeeper ARGS...` as a child process, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "callkeeper.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
