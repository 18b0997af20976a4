"""Ending the peer processes a test started (by their PID only, never by name)."""

from __future__ import annotations

import subprocess


def end_child(
    process: subprocess.Popen[bytes] | None, grace: float = 10.0, after_kill: float | None = None
) -> None:
    """SIGTERM a child that still runs; SIGKILL it if it has not exited within `grace` s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(after_kill)
