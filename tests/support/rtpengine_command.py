"""The rtpengine command line, one copy for the tests (support/rtpengine.py) and the benches
(bench/rtpengine_ng.py).

It is ../shared/peers/rtpengine/start-rtpengine.sh's: userspace only (`--table=-1`, no kernel
module), on 127.0.0.1, in the foreground, logging to stderr, calls deleted at once. What differs
between callers — the binary's path, the log level, extra options, a CPU pin (the bench puts
`taskset` in front) — they pass or add themselves. A module of its own, free of pytest, so the
benches can import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def rtpengine_command(
    binary: str,
    *,
    ng_port: int,
    port_min: int,
    port_max: int,
    pidfile: Path,
    log_level: int,
    options: Iterable[str] = (),
) -> list[str]:
    """The argv of a userspace rtpengine with its NG control port on 127.0.0.1:`ng_port`."""
    return [
        binary,
        "--config-file=none",
        "--table=-1",  # no kernel forwarding: every packet goes through userspace
        "--interface=127.0.0.1",
        f"--listen-ng=127.0.0.1:{ng_port}",
        f"--port-min={port_min}",
        f"--port-max={port_max}",
        "--foreground",
        "--log-stderr",
        f"--log-level={log_level}",
        "--delete-delay=0",
        f"--pidfile={pidfile}",
        *options,
    ]
