"""Data location and download against a real local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from llmplan.errors import DataNotFoundError, LlmplanError
from llmplan.workload.datafiles import DataFile, resolve

BODY = b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "trace.csv").write_bytes(BODY)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):  # keep test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMPLAN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LLMPLAN_OFFLINE", raising=False)
    return tmp_path


def test_data_dir_wins_over_cache(isolated: Path) -> None:
    df = DataFile("azure-llm-2023", "x.csv", "http://127.0.0.1:9/none")
    target = isolated / "data" / "azure-llm-2023" / "x.csv"
    target.parent.mkdir(parents=True)
    target.write_bytes(BODY)
    assert resolve(df) == target


def test_download_checks_sha256(server: str, isolated: Path) -> None:
    good = DataFile("d", "trace.csv", f"{server}/trace.csv", hashlib.sha256(BODY).hexdigest())
    path = resolve(good, show_progress=False)
    assert path.read_bytes() == BODY and str(path).startswith(str(isolated / "cache"))
    bad = DataFile("e", "trace.csv", f"{server}/trace.csv", "0" * 64)
    with pytest.raises(LlmplanError, match="sha256") as exc:
        resolve(bad, show_progress=False)
    assert "\n" not in str(exc.value)
    assert not list((isolated / "cache").rglob("e/*"))  # nothing half-written is left behind


def test_offline_and_absent_says_where(isolated: Path) -> None:
    df = DataFile("azure-llm-2023", "AzureLLMInferenceTrace_conv.csv", "http://127.0.0.1:9/refused.csv")
    with pytest.raises(DataNotFoundError) as exc:
        resolve(df, show_progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and str(isolated / "data" / "azure-llm-2023") in msg and "refused.csv" in msg
