"""An old pickled profiler is refused through the real CLI, and nothing in it runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from .conftest import assert_clean_error, run_cli


class _Marker:
    """Unpickling this touches a file: proof that a loader ran code from the data."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("how", ["profile-predict", "plan-kv-profile"])
def test_old_pickle_is_refused_without_running_it(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "ran"
    d = tmp_path / "old"
    d.mkdir()
    (d / "profiler.pkl").write_bytes(pickle.dumps(_Marker(str(marker))))
    argv = (
        ["profile", "predict", "hi", "--profile", str(d)]
        if how == "profile-predict"
        else ["plan", "--model", "llama-tiny", "--topology", "preset:2x-rtx4090", "--kv-profile", str(d)]
    )
    line = assert_clean_error(run_cli(argv), "re-fit")
    assert "profiler.pkl" in line and f"llmplan profile fit DATA.csv --out {d}" in line
    assert not marker.exists()
