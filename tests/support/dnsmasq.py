"""A real DNS server for tests: Debian's dnsmasq (dnsmasq-base) serving A and SRV records given on
its command line, authoritative for `.test` (unknown names get NXDOMAIN), on a free port."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.resolver
import pytest

from support.ports import free_port
from support.processes import end_child
from support.server import wait_until


def dnsmasq_binary() -> str:
    path = shutil.which("dnsmasq") or (
        "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None
    )
    if path is None:
        pytest.fail("dnsmasq is not installed: run `make test` (it installs dnsmasq-base)")
    return path


def host_record(name: str, ip: str = "127.0.0.1") -> str:
    return f"--host-record={name},{ip}"


def srv_record(owner: str, target: str, port: int, priority: int = 0, weight: int = 5) -> str:
    return f"--srv-host={owner},{target},{port},{priority},{weight}"


@dataclass
class Dnsmasq:
    """One dnsmasq child process; `records` are its record options (`host_record`, ...)."""

    workdir: Path
    records: list[str]
    ttl: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Dnsmasq:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = (self.workdir / f"dnsmasq-{self.starts}.log").open("wb")
        command = [
            dnsmasq_binary(),
            "--keep-in-foreground",
            "--log-facility=-",
            "--conf-file=/dev/null",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/test/",
            f"--local-ttl={self.ttl}",
            "--pid-file=",
            *self.records,
        ]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, 10, what="dnsmasq to answer")
        return self

    def restart(self, records: list[str]) -> None:
        """The same server on the same port with other records (a DNS change)."""
        self.stop()
        self.records = records
        self.start()

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"dnsmasq exited {self.process.returncode}")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 0.5
        try:
            resolver.resolve("probe.test", "A")
        except dns.resolver.NXDOMAIN:
            return True  # it answers (authoritatively: there is no such name)
        except dns.exception.DNSException:
            return False
        return True

    def stop(self) -> None:
        end_child(self.process)

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
