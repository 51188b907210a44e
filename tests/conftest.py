"""Fixtures every test folder may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


@pytest.fixture
def azure_data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point LLMPLAN_DATA_DIR at the shared Azure 2023 data; skip with a reason when absent outside CI."""
    base = Path(os.environ.get("LLMPLAN_DATA_DIR") or SHARED).resolve()
    if not (base / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must provide the Azure trace under {base}/azure-llm-2023/")
        pytest.skip(f"Azure trace absent under {base}/azure-llm-2023/ (set LLMPLAN_DATA_DIR)")
    monkeypatch.setenv("LLMPLAN_DATA_DIR", str(base))
    return base
