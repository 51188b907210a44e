"""llmplan.registry: the one name -> factory table every pluggable family uses."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

import llmplan.registry
from llmplan.errors import LlmplanError
from llmplan.registry import Registry, lowered


@dataclass
class Thing:
    size: int = 1


def test_aliases_case_and_underscores_resolve_to_one_entry():
    reg: Registry = Registry("thing", {"big-thing": Thing}, aliases={"bt": "big-thing"})
    assert reg.create(" Big_Thing ", size=3) == Thing(3)
    assert reg.create("BT") == Thing(1)
    assert "bt" in reg and "small" not in reg


def test_unknown_name_is_one_line_listing_the_choices():
    reg: Registry = Registry("thing", {"b": Thing, "a": Thing}, aliases={"z": "a"}, list_aliases=True)
    with pytest.raises(LlmplanError) as e:
        reg.create("c")
    assert str(e.value) == "unknown thing 'c'; choose one of: a, b, z"
    ordered: Registry = Registry(
        "thing", {"b": 1, "a": 2}, choose="choose from ", sort=False, normalize=lowered
    )
    with pytest.raises(LlmplanError, match="^unknown thing 'c'; choose from b, a$"):
        ordered.get("c")
    assert ordered.get("A") == 2


def test_bad_options_name_the_member():
    reg: Registry = Registry("thing", {"a": Thing})
    with pytest.raises(LlmplanError, match="^bad options for thing 'a': .*'colour'"):
        reg.create("a", colour="red")


def test_lazy_entries_are_listed_and_imported_on_first_use(tmp_path, monkeypatch):
    entries: dict = {}
    monkeypatch.setattr(llmplan.registry, "_test_entries", entries, raising=False)
    (tmp_path / "late_thing_module.py").write_text(
        "import llmplan.registry\nllmplan.registry._test_entries['late'] = dict\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("thing", entries, lazy={"late": "late_thing_module"})
    assert reg.names() == ["late"] and "late" not in entries
    assert reg.create("late", a=1) == {"a": 1}
    assert "late_thing_module" in sys.modules
    sys.modules.pop("late_thing_module")


def test_admission_policies_are_a_registry_too():
    from llmplan.frontend.admission import AdmissionQueue

    assert (AdmissionQueue(policy="slo-dbs").w_len, AdmissionQueue(policy="odbs").w_slo) == (0.0, 0.0)
    known = "fcfs, slo-odbs, slo-dbs, odbs"
    with pytest.raises(LlmplanError, match=f"^unknown admission policy 'x'; choose one of {known}$"):
        AdmissionQueue(policy="x")  # type: ignore[arg-type]
