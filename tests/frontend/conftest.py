from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

# server_harness (free ports, wait_healthy) is shared with tests/server.
sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

STUB = str(Path(__file__).with_name("stub_backend.py"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    return _free_port


@pytest.fixture
def stub_argv():
    def make(port: int, *extra: str) -> list[str]:
        return [sys.executable, STUB, str(port), *extra]

    return make
