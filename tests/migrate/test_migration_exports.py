"""Controller/store counters reach Prometheus; the comparison's systems are built by name."""

from __future__ import annotations

import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest

from llmplan.bench.systems import controller_hook, system_config
from llmplan.errors import LlmplanError
from llmplan.kvstore.metrics import StoreCollector
from llmplan.kvstore.store import GlobalKVStore
from llmplan.migrate.controller import ControllerConfig, MigrationController, WorkerLoad
from llmplan.migrate.metrics import ControllerCollector


def test_controller_counters_in_prometheus_text():
    ctl = MigrationController(ControllerConfig(ewma=1.0))
    hot = WorkerLoad("d0", compute=0.2, memory_bytes=9e9, memory_max=1e10)
    cold = WorkerLoad("d1", compute=0.1, memory_bytes=1e9, memory_max=1e10)
    [d] = ctl.step(0.0, [hot, cold])
    ctl.record_result(d, 0.5)
    reg = CollectorRegistry()
    reg.register(ControllerCollector(ctl))
    text = generate_latest(reg).decode()
    assert "llmplan_migration_attention_migrations_total 1.0" in text
    assert "llmplan_migration_migration_seconds_total 0.5" in text
    assert "llmplan_migration_overloaded_workers 1.0" in text
    ratio = 0.5 / d.est_time_s
    assert f'llmplan_migration_cost_ratio{{kind="attention"}} {ratio}' in text


def test_store_counters_in_prometheus_text():
    store = GlobalKVStore(num_layers=1, memory_bytes=1 << 20)
    store.put(b"k" * 16, 0, torch.zeros(2, 4, 1, 2))
    store.get(b"k" * 16, 0)
    store.get(b"x" * 16, 0)
    reg = CollectorRegistry()
    reg.register(StoreCollector(store))
    text = generate_latest(reg).decode()
    assert "llmplan_kvstore_memory_hits_total 1.0" in text
    assert "llmplan_kvstore_misses_total 1.0" in text
    assert "llmplan_kvstore_memory_bytes 64.0" in text


def test_systems_share_hardware_and_differ_in_architecture():
    v = system_config("vllm", gpus=4)
    d = system_config("distserve", gpus=4, pd=(1, 3))
    b = system_config("BanaServe", gpus=4, pd=(1, 3))
    assert (v.instances, d.instances, b.instances) == (4, 4, 4)
    assert v.disaggregation is None and d.disaggregation == b.disaggregation == (1, 3)
    assert (v.router, d.router, b.router) == ("round-robin", "least-loaded", "banaserve")
    assert controller_hook(b) is not None and controller_hook(d) is None
    with pytest.raises(LlmplanError):
        system_config("sglang")
    with pytest.raises(LlmplanError):
        system_config("distserve", gpus=4, pd=(2, 3))
