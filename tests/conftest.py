"""Shared fixtures: a real callkeeper process per test module, peers-availability checks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import ServerProcess

SHARED = Path(__file__).resolve().parents[2] / "shared"


def require_tool(name: str) -> str:
    """The path of a Debian peer tool; `make test` installs them, so missing ones fail loudly."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test` (it installs the Debian peers)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("callkeeper")) as process:
        yield process
