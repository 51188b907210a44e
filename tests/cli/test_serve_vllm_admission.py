"""`llmplan serve --engine vllm --admission NAME`: vLLM is asked for priority scheduling when the
policy's order is a per-request key, and a policy no priority can express is refused."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from .conftest import assert_clean_error, run_cli


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "p.json"
    res = run_cli(["plan", "--model", "llama-2-7b", "--topology", "preset:dgx-a100", "--mode", "HE",
                   "--out", str(path)])
    assert res.code == 0, res.stderr
    return path


@pytest.mark.parametrize(("admission", "flag"), [("slo-odbs", True), ("sjf", True), ("fcfs", False)])
def test_dry_run_asks_vllm_for_priority_scheduling(plan_file, admission, flag):
    res = run_cli(["serve", "--engine", "vllm", "--plan", str(plan_file), "--admission", admission,
                   "--dry-run"])
    assert res.code == 0, res.stderr
    assert ("--scheduling-policy priority" in " ".join(res.stdout.split())) is flag


@pytest.mark.parametrize(
    ("admission", "why"),
    [("s3", "packs first-fit"), ("slo-odbs-cb", "changes while a request waits"),
     ("static-fcfs", "statically"), ("nope", "unknown --admission")],
)
def test_a_policy_no_priority_can_express_is_refused(plan_file, admission, why):
    res = run_cli(["serve", "--engine", "vllm", "--plan", str(plan_file), "--admission", admission,
                   "--dry-run"])
    assert_clean_error(res, why)


def test_vllm_bin_that_is_not_an_executable_is_refused(plan_file, tmp_path):
    missing = str(tmp_path / "no-vllm")
    res = run_cli(["serve", "--engine", "vllm", "--plan", str(plan_file), "--vllm-bin", missing])
    assert_clean_error(res, "--vllm-bin")


@pytest.mark.parametrize(
    ("admission", "policy"), [("slo-odbs", "slo-odbs-cb"), ("slo-odbs-cb", "slo-odbs-cb"), ("sjf", "sjf")]
)
def test_scheduler_cls_route_launches_vllm_with_the_policy_scheduler(plan_file, admission, policy):
    """slo-odbs-cb, which no priority can carry, runs inside vLLM through the scheduler class."""
    res = run_cli(["serve", "--engine", "vllm", "--plan", str(plan_file), "--admission", admission,
                   "--vllm-route", "scheduler-cls", "--dry-run"])
    assert res.code == 0, res.stderr
    out = " ".join(res.stdout.split())
    assert "--scheduler-cls llmplan.frontend.vllm_scheduler.PolicyScheduler" in out
    assert f"LLMPLAN_VLLM_POLICY={policy}" in out and "PYTHONPATH=" in out
    assert "--scheduling-policy" not in out


@pytest.mark.parametrize(
    ("args", "why"),
    [(["--admission", "s3", "--vllm-route", "scheduler-cls"], "packs first-fit"),
     (["--admission", "static-fcfs", "--vllm-route", "scheduler-cls"], "statically"),
     (["--admission", "nope", "--vllm-route", "scheduler-cls"], "unknown --admission"),
     (["--vllm-route", "fifo"], "unknown --vllm-route")],
)
def test_scheduler_cls_route_refusals(plan_file, args, why):
    res = run_cli(["serve", "--engine", "vllm", "--plan", str(plan_file), *args, "--dry-run"])
    assert_clean_error(res, why)


def test_vllm_route_without_vllm_is_refused():
    res = run_cli(["serve", "--dummy-weights", "llama-tiny", "--vllm-route", "scheduler-cls", "--dry-run"])
    assert_clean_error(res, "--vllm-route")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="needs a Python without vLLM")
def test_scheduler_cls_route_checks_vllms_python_before_starting(plan_file, tmp_path):
    """A `vllm` whose Python cannot load the scheduler class (here: no vllm module at all) is one
    line before any instance starts, not a crash in an instance log a minute later."""
    fake = tmp_path / "vllm"
    fake.write_text(f"#!{sys.executable}\nraise SystemExit('this vllm must not be started')\n")
    fake.chmod(0o755)
    logs = tmp_path / "logs"
    res = run_cli(["serve", "--engine", "vllm", "--plan", str(plan_file), "--vllm-bin", str(fake),
                   "--vllm-route", "scheduler-cls", "--admission", "slo-odbs", "--log-dir", str(logs)])
    assert_clean_error(res, "PolicyScheduler: ModuleNotFoundError: No module named 'vllm'")
    assert not logs.exists()  # nothing was started
