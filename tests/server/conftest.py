"""A real llama-tiny engine (random weights, real forward passes) behind real uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from server_harness import running_server  # noqa: E402


@pytest.fixture(scope="session")
def tiny_engine():
    from llmplan.runtime.factory import build_engine

    # 256 blocks x 16 tokens: ample for these tests, and the leak check sees every block.
    return build_engine(dummy_weights="llama-tiny", max_num_seqs=32, num_kv_blocks=256, max_queue=256)


@pytest.fixture(scope="session")
def server(tiny_engine):
    with running_server(tiny_engine) as url:
        yield url
