"""Run SIPp (Debian's sip-tester) as a real peer: built-in or XML scenarios, free ports, stats."""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.ports import free_port, free_port_block
from support.processes import end_child

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("sipp is not installed: run `make test` (it installs sip-tester)")
    return path


# `-mp P`: SIPp binds P (audio RTP) and P+1 to P+3 (audio RTCP, video RTP and RTCP) at start-up.
SIPP_MEDIA_PORTS = 4


@dataclass
class SippStats:
    successful: int
    failed: int
    retransmissions: int
    unexpected: int
    timeouts: int
    raw: dict[str, str]


@dataclass
class Sipp:
    """One SIPp process. `args` are the scenario arguments (`-sn uac`, `-sf file`, `-s bob` ...)."""

    workdir: Path
    args: list[str]
    target: str | None = None
    transport: str = "udp"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    name: str = "sipp"

    @property
    def stat_file(self) -> Path:
        return self.workdir / f"{self.name}-stats.csv"

    @property
    def error_file(self) -> Path:
        return self.workdir / f"{self.name}-errors.log"

    def command(self) -> list[str]:
        command = [
            sipp_binary(),
            *self.args,
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-cp",
            str(free_port()),
            "-mp",
            str(free_port_block(SIPP_MEDIA_PORTS)),
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(self.stat_file),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(self.error_file),
            "-buff_size",
            "4194304",
        ]
        if self.transport == "tcp":
            command += ["-t", "t1"]
        if self.target is not None:
            command.append(self.target)
        return command

    def start(self) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / f"{self.name}.out").open("wb")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        return self

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        end_child(self.process)

    def stats(self) -> SippStats:
        with self.stat_file.open() as handle:
            rows = list(csv.reader(handle, delimiter=";"))
        values = dict(zip(rows[0], rows[-1], strict=False))
        return SippStats(
            successful=int(values["SuccessfulCall(C)"]),
            failed=int(values["FailedCall(C)"]),
            retransmissions=int(values["Retransmissions(C)"]),
            unexpected=int(values["FailedUnexpectedMessage(C)"]),
            timeouts=int(values["FailedTimeoutOnRecv(C)"]),
            raw=values,
        )

    def errors(self) -> str:
        return (
            self.error_file.read_text(errors="replace")[-4000:] if self.error_file.exists() else ""
        )

    def __enter__(self) -> Sipp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
