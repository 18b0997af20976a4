"""A network partition of one UDP port on the loopback interface, made with iptables.

`cut(port)` drops every datagram *arriving* on `lo` to or from `port` (INPUT chain: the sender's
sendto() still succeeds and nothing answers, as when a phone's network goes away; a DROP in
OUTPUT would make sendto() fail with EPERM instead). The rules match only the given port and
carry a comment naming this test process, and `heal()`/`close()` delete them; use it as a
context manager (or a fixture) so they are deleted even when the test fails. Needs root.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest


def _iptables() -> str | None:
    return shutil.which("iptables", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def require_iptables(what: str) -> str:
    """Fail (not skip) with what is missing: these tests run as root in CI."""
    if os.geteuid() != 0:
        pytest.fail(f"{what} needs root (iptables DROP rules on lo to cut one SIPp port)")
    program = _iptables()
    if program is None:
        pytest.fail(f"{what} needs iptables: apt-get install iptables")
    return program


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LoopbackPartition:
    def __init__(self, what: str = "this test") -> None:
        self.program = require_iptables(what)
        self.cut_ports: set[int] = set()
        self._remove_stale()

    def _remove_stale(self) -> None:
        """Rules left by a test process that was killed before its teardown ran."""
        listing = self._run("-S", "INPUT", check=False).stdout
        for line in listing.splitlines():
            match = re.search(r"ck-partition-(\d+)-\d+", line)
            if match and line.startswith("-A ") and not _alive(int(match.group(1))):
                self._run("-D", *shlex.split(line)[1:], check=False)

    def _rules(self, port: int) -> list[list[str]]:
        comment = ["-m", "comment", "--comment", f"ck-partition-{os.getpid()}-{port}"]
        return [
            ["INPUT", "-i", "lo", "-p", "udp", direction, str(port), *comment, "-j", "DROP"]
            for direction in ("--dport", "--sport")
        ]

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.program, "-w", *args], capture_output=True, text=True, check=check, timeout=20
        )

    def cut(self, port: int) -> None:
        self.cut_ports.add(port)
        try:
            for rule in self._rules(port):
                self._run("-I", *rule)
        except subprocess.CalledProcessError as error:
            self.heal(port)
            pytest.fail(f"iptables failed ({' '.join(error.cmd)}): {error.stderr.strip()}")

    def heal(self, port: int) -> None:
        for rule in self._rules(port):
            for _ in range(10):  # every copy, should one have been added twice
                if self._run("-D", *rule, check=False).returncode != 0:
                    break
        self.cut_ports.discard(port)

    def dropped(self, port: int) -> int:
        """Packets dropped so far by the rules for `port`."""
        out = self._run("-L", "INPUT", "-n", "-v", "-x").stdout
        tag = f"ck-partition-{os.getpid()}-{port} "
        return sum(int(line.split()[0]) for line in out.splitlines() if tag in line + " ")

    def close(self) -> None:
        for port in list(self.cut_ports):
            self.heal(port)

    def __enter__(self) -> LoopbackPartition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
