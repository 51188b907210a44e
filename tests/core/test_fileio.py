"""The one atomic text writer used for plans, calibration profiles and dataset caches."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmplan.fileio import write_text_atomic


def test_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "plan.json"
    p.write_text("old")
    assert write_text_atomic(p, "new") == p
    assert p.read_text() == "new"
    assert [f.name for f in tmp_path.iterdir()] == ["plan.json"]


def test_a_failed_replace_keeps_the_target_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    target.mkdir()
    (target / "keep").write_text("x")  # a non-empty directory cannot be replaced by a file
    with pytest.raises(OSError):
        write_text_atomic(target, "data")
    assert (target / "keep").read_text() == "x"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cache"]
