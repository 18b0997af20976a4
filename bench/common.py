"""Shared bench helpers: free ports, per-process CPU from /proc, SIPp runs and their stats."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of these processes (and their threads), from /proc/PID/stat."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    """pid and all its descendants (Kamailio forks its workers)."""
    result = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return result
    for child in out.split():
        result.extend(children_of(int(child)))
    return result


@dataclass
class SippResult:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    elapsed: float
    server_cpu: float  # percent of one core

    @property
    def clean(self) -> bool:
        """Every call succeeded. (Retransmissions are reported, not failed on: on this shared
        VM a scheduling stall of either process shows up as a handful of them.)"""
        return self.failed == 0 and self.successful == self.calls


def run_sipp(
    scenario: list[str],
    target: str,
    rate: int,
    seconds: float,
    workdir: Path,
    server_pids: list[int],
    cpu: str | None = "1",
    extra: list[str] | None = None,
) -> SippResult:
    """Run SIPp at `rate` calls/s for `seconds`, pinned to `cpu`; collect its final stats."""
    stat = workdir / f"sipp-{rate}-{time.monotonic_ns()}.csv"
    calls = int(rate * seconds)
    port, control, media = free_port(), free_port(), free_port()
    command = [
        "sipp",
        *scenario,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-cp",
        str(control),
        "-mp",
        str(media),
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-l",
        str(max(1000, rate * 3)),
        "-nostdin",
        "-buff_size",
        "4194304",
        "-trace_stat",
        "-stf",
        str(stat),
        "-fd",
        "1",
        *(extra or []),
        target,
    ]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    before = cpu_seconds(server_pids)
    started = time.monotonic()
    subprocess.run(command, capture_output=True, timeout=seconds * 4 + 60, cwd=workdir)
    elapsed = time.monotonic() - started
    used = cpu_seconds(server_pids) - before
    with stat.open() as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    header, last = rows[0], rows[-1]
    value = dict(zip(header, last, strict=False))
    return SippResult(
        rate=rate,
        calls=calls,
        successful=int(value["SuccessfulCall(C)"]),
        failed=int(value["FailedCall(C)"]),
        retransmissions=int(value["Retransmissions(C)"]),
        elapsed=elapsed,
        server_cpu=100.0 * used / elapsed,
    )


def wait_for_udp_answer(port: int, timeout: float = 15.0) -> None:
    """Wait until something answers an OPTIONS on 127.0.0.1:port."""
    request = (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-w{{}}\r\n"
        "From: <sip:w@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: wait-{}\r\nCSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            data = request.replace("127.0.0.1:9", f"127.0.0.1:{sock.getsockname()[1]}")
            sock.sendto(data.format(attempt, attempt).encode(), ("127.0.0.1", port))
            try:
                sock.recvfrom(65535)
                return
            except TimeoutError:
                continue
    raise RuntimeError(f"nothing answers OPTIONS on port {port}")


# --- a `callkeeper serve` process on free ports ------------------------------------------------
@dataclass
class Server:
    process: subprocess.Popen[bytes]
    sip_port: int
    api_port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def get(self, path: str, timeout: float = 30.0) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
            return bytes(response.read())

    def metrics(self) -> dict[str, float]:
        samples: dict[str, float] = {}
        for line in self.get("/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                # Seen while an SSE stream was (or had just been) open: the API's shutdown
                # waits for the endless events handler. Not a bench's subject.
                print("note: callkeeper did not exit within 5 s of SIGTERM; killed")
                self.process.kill()
                self.process.wait(5)


def start_server(
    workdir: Path, config_lines: list[str], sip_port: int, api_port: int, cpu: str | None = None
) -> Server:
    """Write the config, start `callkeeper serve` (pinned to `cpu` when given), wait for
    /healthz (60 s at most)."""
    config = workdir / "callkeeper.toml"
    config.write_text("\n".join(config_lines) + "\n")
    log = workdir / "callkeeper.log"
    command = [sys.executable, "-m", "callkeeper.cli", "serve", "--config", str(config)]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpu, *command]  # taskset execs: the PID is the server's
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(process, sip_port, api_port, log)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"callkeeper exited {process.returncode}:\n{log.read_text()[-2000:]}"
            )
        with contextlib.suppress(OSError, ValueError):
            if json.loads(server.get("/healthz", timeout=2)).get("status") == "ok":
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("callkeeper did not become healthy within 60 s")
        time.sleep(0.1)
