"""`--max-model-len` is served as asked or refused with both numbers, never quietly cut down."""

from __future__ import annotations

import pytest

from llmplan.errors import LlmplanError

from .conftest import assert_clean_error, run_cli


def test_above_the_models_context_is_refused_before_loading() -> None:
    line = assert_clean_error(
        run_cli(["serve", "--dummy-weights", "llama-tiny", "--max-model-len", "1000000000", "--port", "1"])
    )
    assert "1000000000" in line and "2048" in line and "--max-model-len 2048 or less" in line


def test_more_than_the_kv_cache_holds_is_refused_with_both_numbers() -> None:
    from llmplan.runtime.factory import build_engine

    msg = r"--max-model-len 1024 needs 1024 KV tokens but the cache holds 32 "
    with pytest.raises(LlmplanError, match=msg):
        build_engine(dummy_weights="llama-tiny", num_kv_blocks=2, block_size=16, max_model_len=1024)


def test_a_fitting_value_is_served_exactly() -> None:
    from llmplan.runtime.factory import build_engine

    engine = build_engine(dummy_weights="llama-tiny", num_kv_blocks=64, block_size=16, max_model_len=100)
    assert engine.max_model_len == 100
