"""One name per role: ``both`` inside, ``colocated`` still accepted where people type it and
shown where the front end prints an instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmplan.deployment import load_spec
from llmplan.errors import LlmplanError
from llmplan.frontend.deploy import builtin_specs
from llmplan.roles import parse_role, role_label


def test_a_spec_file_may_say_colocated_and_reads_as_both(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"model": "llama-tiny", "instances": [{"name": "i0", "role": "colocated"}]}))
    spec = load_spec(p)
    assert spec.roles == ["both"]
    assert spec.to_dict()["instances"][0]["role"] == "both"


def test_the_front_end_builds_both_and_labels_it_colocated() -> None:
    specs = builtin_specs(2, host="127.0.0.1", base_port=9000, dummy_weights="llama-tiny", model=None,
                          extra_args=[])
    assert [s.role for s in specs] == ["both", "both"]
    assert [role_label(s.role) for s in specs] == ["colocated", "colocated"]
    pd = builtin_specs(2, host="127.0.0.1", base_port=9000, dummy_weights="llama-tiny", model=None,
                       extra_args=[], pd=(1, 1), kv_store="/tmp/store")
    assert [role_label(s.role) for s in pd] == ["prefill", "decode"]


def test_an_unknown_role_is_one_line_naming_the_choices() -> None:
    assert parse_role(" Colocated ") == "both"
    with pytest.raises(LlmplanError, match="role 'boss' is unknown; use both, prefill, decode"):
        parse_role("boss")
