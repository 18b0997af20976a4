"""The SIP middleboxes the call benches compare, each in front of its own SIPp callee.

- callkeeper as a B2BUA: the caller is a trusted source, the callee a static contact of `bob`;
- sippy 2.5.0's `b2bua_simple` (PyPI `sippy`, the `bench` extra), forwarding every call to the callee;
- Kamailio as a stateful proxy with the dialog module (`-A WITH_DIALOG -m 256`).

By default every middlebox is pinned to CPU 0 and every SIPp to CPU 1 (`taskset`); with
`use_shared_cpus()` nothing is pinned and SIPp and the middlebox share both cores, the conditions of
../shared/peers/README.md section 7. Each middlebox listens on a free port on 127.0.0.1 and is
stopped by its PID. Used by b2bua_bench.py and call_memory.py; not a bench itself.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from common import HERE, children_of, free_port, wait_for_udp_answer

MIDDLEBOX_CPU = "0"
SIPP_CPU = "1"
_pinned = True
SIPP_BUFFER = "4194304"
SOCKET_BUFFER_MAX = 8388608

# The caller scenarios. callkeeper is driven by SIPp's built-in uac, which fails a call whose 180
# arrives after its 200: keeping per-dialog order is one of callkeeper's requirements. sippy (worker
# threads) and Kamailio (4 worker processes reading one UDP socket) forward the 180 after the 200
# now and then, which is legal over UDP, so they are driven by a uac that ignores a late 1xx
# (uac_tolerant.xml): their capacity is measured, not their order.
STRICT_UAC = ["-sn", "uac"]
TOLERANT_UAC = ["-sf", str(HERE / "sipp" / "uac_tolerant.xml")]
UAS = ["-sf", str(HERE / "sipp" / "uas.xml")]

LABELS = {
    "callkeeper": "callkeeper",
    "sippy": "sippy b2bua_simple 2.5.0",
    "kamailio": "Kamailio + dialog",
}
CALLER = {
    "callkeeper": "SIPp -sn uac (strict order)",
    "sippy": "sipp/uac_tolerant.xml (late 1xx ignored)",
    "kamailio": "sipp/uac_tolerant.xml (late 1xx ignored)",
}


def use_shared_cpus() -> None:
    """Pin nothing from now on: the scheduler spreads SIPp and the middlebox over both cores."""
    global _pinned
    _pinned = False


def cpu_layout() -> str:
    return (
        "middleboxes on CPU 0, SIPp on CPU 1" if _pinned else "SIPp and middleboxes share all CPUs"
    )


def on_cpu(cpu: str, command: list[str]) -> list[str]:
    """`command` pinned to `cpu` (taskset execs, so the PID stays the program's), unless shared."""
    return ["taskset", "-c", cpu, *command] if _pinned else command


def sippy_binary() -> str | None:
    """b2bua_simple next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / "b2bua_simple"
    return str(local) if local.exists() else shutil.which("b2bua_simple")


def missing(name: str) -> str | None:
    """Why this middlebox cannot run here, or None."""
    if shutil.which("sipp") is None:
        return "sipp is not installed (apt-get install sip-tester)"
    if shutil.which("taskset") is None:
        return "taskset is not installed (util-linux)"
    if name == "sippy" and sippy_binary() is None:
        return "b2bua_simple not found: .venv/bin/pip install -e '.[bench]' (sippy==2.5.0)"
    if name == "kamailio" and shutil.which("kamailio") is None:
        return "kamailio is not installed (apt-get install kamailio)"
    return None


def raise_socket_buffers() -> str:
    """Let SIPp's `-buff_size` take effect: net.core.{r,w}mem_max >= 8 MB (needs root)."""
    notes = []
    for name in ("rmem_max", "wmem_max"):
        path = Path(f"/proc/sys/net/core/{name}")
        try:
            current = int(path.read_text())
        except OSError:
            continue
        if current >= SOCKET_BUFFER_MAX:
            notes.append(f"{name}={current}")
            continue
        try:
            path.write_text(str(SOCKET_BUFFER_MAX))
            notes.append(f"{name}: {current} -> {SOCKET_BUFFER_MAX}")
        except OSError:
            notes.append(f"{name}={current} (not root: could not raise it; SIPp may lose packets)")
    return "socket buffers: " + ", ".join(notes)


def read_stats(path: Path) -> dict[str, str] | None:
    """The last row of a SIPp `-trace_stat` file, keyed by the header row."""
    try:
        with path.open("rb") as handle:
            header = handle.readline().decode(errors="replace")
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            tail = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    if not header or len(tail) < 2:
        return None
    names = next(csv.reader(io.StringIO(header), delimiter=";"))
    values = next(csv.reader(io.StringIO(tail[-1]), delimiter=";"))
    return dict(zip(names, values, strict=False))


def stat(values: dict[str, str] | None, name: str) -> int:
    if not values:
        return 0
    try:
        return int(float(values.get(name, "0") or 0))
    except ValueError:
        return 0


def error_lines(path: Path, offset: int = 0, limit: int = 4) -> list[str]:
    """The first SIPp error-log lines after `offset` that say why a call failed."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read(1_000_000).decode(errors="replace")
    except OSError:
        return []
    keys = ("Aborting", "unexpected", "timeout", "retrans", "Failed", "Error")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    # "Dead call ... received" lines are late retransmissions of a finished call: not a cause.
    found = [line for line in lines if any(key in line for key in keys) and "Dead call" not in line]
    return [line[:220] for line in found][:limit]


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM this one process (by PID), SIGKILL it if it is still there after `grace` s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class Sipp:
    """One background SIPp process (a callee, or a caller of long calls)."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    stat_file: Path
    error_file: Path

    def stats(self) -> dict[str, str] | None:
        return read_stats(self.stat_file)

    def stop(self) -> None:
        stop_process(self.process)


def _udp_port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.bind((host, port))
        except OSError:
            return False
    return True


def sipp_ports() -> list[str]:
    """`-p -cp -mp` for one SIPp. SIPp binds its control port on 0.0.0.0 (a port free on
    127.0.0.1 can be taken on another address) and media on -mp and -mp+2, so check those too."""
    control = free_port()
    while not _udp_port_free("0.0.0.0", control):
        control = free_port()
    media = free_port()
    while not all(_udp_port_free("127.0.0.1", media + offset) for offset in (1, 2, 3)):
        media = free_port()
    return ["-p", str(free_port()), "-cp", str(control), "-mp", str(media)]


SIPP_START_ERRORS = (254, 255)  # SIPp's exit codes for a fatal error, e.g. a port already bound


def start_sipp(
    workdir: Path, name: str, scenario: list[str], extra: list[str], target: str | None = None
) -> Sipp:
    """Start SIPp in the background; on a start-up failure (a port taken meanwhile by another
    process on this shared machine) try again with other ports."""
    stat_file, error_file = workdir / f"{name}.csv", workdir / f"{name}.err"
    for _attempt in range(3):
        ports = sipp_ports()
        command = on_cpu(SIPP_CPU, [
            "sipp", *scenario, "-i", "127.0.0.1", *ports,
            "-nostdin", "-buff_size", SIPP_BUFFER, "-trace_stat", "-stf", str(stat_file),
            "-fd", "1", "-trace_err", "-error_file", str(error_file),
            # -aa: answer in-dialog OPTIONS 200, as phones do (callkeeper audits long calls)
            "-aa", *extra,
        ])  # fmt: skip
        if target is not None:
            command.append(target)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"{name}.out").open("wb"),
            cwd=workdir,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            if process.wait(0.5) in SIPP_START_ERRORS:
                continue
        return Sipp(name, process, int(ports[1]), stat_file, error_file)
    raise RuntimeError(f"SIPp {name} did not start: see {workdir / (name + '.out')}")


@dataclass
class Middlebox:
    """A running middlebox with its own SIPp callee (`uas`)."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    uas: Sipp
    caller: list[str]
    api_port: int | None = None
    extra_pids: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The middlebox and every process it forked (Kamailio's workers)."""
        return children_of(self.process.pid)

    def metric(self, name: str) -> float | None:
        """A Prometheus sample from callkeeper's /metrics (None for the others, or on error)."""
        if self.api_port is None:
            return None
        url = f"http://127.0.0.1:{self.api_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                with contextlib.suppress(ValueError):
                    return float(line.rsplit(" ", 1)[1])
        return None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        stop_process(self.process)
        self.uas.stop()


def start_callkeeper(workdir: Path) -> Middlebox:
    uas = start_sipp(workdir, "callkeeper-uas", UAS, [])
    port, api = free_port(), free_port()
    config = workdir / "callkeeper.toml"
    config.write_text(
        f'[sip]\nlisten = ["udp:127.0.0.1:{port}"]\ntrusted_sources = ["127.0.0.1/32"]\n'
        f'[api]\nlisten = "127.0.0.1:{api}"\n[store]\nurl = "memory:"\n[log]\nlevel = "warning"\n'
        f'[[users]]\nname = "bob"\nstatic_contacts = ["sip:bob@127.0.0.1:{uas.port}"]\n'
    )
    process = subprocess.Popen(
        on_cpu(MIDDLEBOX_CPU, [sys.executable, "-m", "callkeeper.cli", "serve",
                               "--config", str(config)]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(workdir / "callkeeper.log").open("wb"),
    )  # fmt: skip
    box = Middlebox("callkeeper", process, port, uas, STRICT_UAC, api_port=api)
    _wait_ready(box)
    return box


def start_sippy(workdir: Path) -> Middlebox:
    uas = start_sipp(workdir, "sippy-uas", UAS, [])
    port = free_port()
    binary = sippy_binary()
    assert binary is not None
    # SIPLOG_LVL=WARN: sippy logs every SIP message by default. -f: stay in the foreground.
    environment = {**os.environ, "SIPLOG_LVL": "WARN"}
    process = subprocess.Popen(
        on_cpu(MIDDLEBOX_CPU, [sys.executable, binary, "-f", "-l", "127.0.0.1",
                               "-p", str(port), "-n", f"127.0.0.1:{uas.port}"]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(workdir / "sippy.log").open("wb"), env=environment,
    )  # fmt: skip
    box = Middlebox("sippy", process, port, uas, TOLERANT_UAC)
    _wait_ready(box)
    return box


def start_kamailio(workdir: Path, children: int = 4) -> Middlebox:
    uas = start_sipp(workdir, "kamailio-uas", UAS, [])
    port = free_port()
    text = (HERE / "kamailio" / "b2bua-proxy.cfg").read_text()
    config = workdir / "kamailio.cfg"
    substitutions = {
        "CTL_SOCKET": str(workdir / "kamailio_ctl"),
        "UAS_PORT": str(uas.port),
        "CHILDREN": str(children),
        "PORT": str(port),
    }
    for key, value in substitutions.items():  # UAS_PORT before PORT
        text = text.replace(key, value)
    config.write_text(text)
    process = subprocess.Popen(
        on_cpu(MIDDLEBOX_CPU, ["kamailio", "-f", str(config), "-DD", "-E", "-A", "WITH_DIALOG",
                               "-m", "256", "-P", str(workdir / "kamailio.pid"), "-Y", str(workdir)]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(workdir / "kamailio.log").open("wb"),
    )  # fmt: skip
    box = Middlebox("kamailio", process, port, uas, TOLERANT_UAC)
    _wait_ready(box)
    return box


STARTERS = {"callkeeper": start_callkeeper, "sippy": start_sippy, "kamailio": start_kamailio}


def _wait_ready(box: Middlebox) -> None:
    """Until the middlebox answers an OPTIONS (Kamailio relays it to the callee, which answers)."""
    try:
        wait_for_udp_answer(box.port, timeout=20.0)
    except RuntimeError:
        box.stop()
        raise
    time.sleep(0.5)


def memory_kb(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in KB summed over these processes, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if parts[0] == "Rss:":
                rss += int(parts[1])
            elif parts[0] == "Pss:":
                pss += int(parts[1])
    return rss, pss
