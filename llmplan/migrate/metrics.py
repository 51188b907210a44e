"""Prometheus export of migrations: ``registry.register(ControllerCollector(ctl))`` and
``PipelineCollector(executor.stats)``.

:class:`ControllerCollector`: every counter of :attr:`MigrationController.counters` becomes
``llmplan_migration_<name>_total`` (decisions by kind, skips by reason, bytes and seconds moved,
the measured and estimated migration time), plus ``llmplan_migration_decisions_total{kind,code}``
(one labelled family: ``kind`` layer/attention/skip, ``code`` migrate or the skip's reason code);
the current over/underloaded set sizes are gauges.

:class:`PipelineCollector`: what a multi-worker instance executed
(:class:`~llmplan.runtime.workers.executor.PipelineStats`): layer migrations by trigger, the last
and total measured seconds beside the estimate ``S/B + T_sync``, bytes moved, decisions the
executor did not apply, and per worker its layers and compute seconds.

Both read at scrape time, so the controller and the executor stay plain objects with no
Prometheus dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from llmplan.migrate.controller import MigrationController


class ControllerCollector:
    def __init__(self, controller: MigrationController, prefix: str = "llmplan_migration") -> None:
        self.controller = controller
        self.prefix = prefix

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters = dict(self.controller.counters)
        for name, value in sorted(counters.items()):
            doc = f"migration controller: {name.replace('_', ' ')}"
            yield CounterMetricFamily(f"{self.prefix}_{name}", doc, value=float(value))
        by = CounterMetricFamily(f"{self.prefix}_decisions", "migration controller decisions by kind and "
                                 "reason code (code=migrate: decided to migrate)", labels=["kind", "code"])
        for kind in ("layer", "attention"):
            by.add_metric([kind, "migrate"], float(counters.get(f"{kind}_migrations", 0)))
        for name, value in sorted(counters.items()):
            if name.startswith("skipped_"):
                by.add_metric(["skip", name[len("skipped_"):]], float(value))
        yield by
        yield GaugeMetricFamily(f"{self.prefix}_overloaded_workers", "workers in the overloaded set",
                                value=len(self.controller.overloaded))
        yield GaugeMetricFamily(f"{self.prefix}_underloaded_workers", "workers in the underloaded set",
                                value=len(self.controller.underloaded))
        ratio = GaugeMetricFamily(f"{self.prefix}_cost_ratio", "measured / modelled (S/B + T_sync) "
                                  "migration time, EWMA per kind; the controller prices moves with it",
                                  labels=["kind"])
        for kind, r in sorted(self.controller.time_ratio.items()):
            ratio.add_metric([kind], r)
        yield ratio


class PipelineCollector:
    def __init__(self, stats: Callable[[], Any], prefix: str = "llmplan_layer_migration") -> None:
        self._stats = stats
        self.prefix = prefix

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self._stats()
        p = self.prefix
        done = CounterMetricFamily(f"{p}s", "layer migrations executed, by trigger (admin, controller)",
                                   labels=["trigger"])
        for trigger in sorted({"admin", "controller", *s.migrations}):
            done.add_metric([trigger], float(s.migrations.get(trigger, 0)))
        yield done
        last = s.last
        yield GaugeMetricFamily(f"{p}_last_seconds", "measured time of the last layer migration",
                                value=last.measured_s if last else 0.0)
        yield GaugeMetricFamily(f"{p}_last_estimate_seconds",
                                "estimate S/B + T_sync of the last layer migration",
                                value=last.estimate_s if last else 0.0)
        yield CounterMetricFamily(f"{p}_seconds", "measured layer-migration time", value=s.measured_s_total)
        yield CounterMetricFamily(f"{p}_estimate_seconds", "estimated (S/B + T_sync) layer-migration time",
                                  value=s.estimate_s_total)
        yield CounterMetricFamily(f"{p}_bytes", "bytes moved by layer migrations (weights + KV)",
                                  value=float(s.bytes_total))
        na = CounterMetricFamily("llmplan_migration_not_applied", "controller decisions the executor did not "
                                 "apply, by kind", labels=["kind"])
        for kind in sorted({"attention", "layer", *s.not_applied}):
            na.add_metric([kind], float(s.not_applied.get(kind, 0)))
        yield na
        off = CounterMetricFamily("llmplan_attention_offloads", "attention migrations executed (KV heads "
                                  "of layers offloaded to another worker), by trigger", labels=["trigger"])
        back = CounterMetricFamily("llmplan_attention_restores", "layers whose offloaded heads came back, "
                                   "by trigger", labels=["trigger"])
        for trigger in sorted({"admin", "controller", *s.offloads, *s.restores}):
            off.add_metric([trigger], float(s.offloads.get(trigger, 0)))
            back.add_metric([trigger], float(s.restores.get(trigger, 0)))
        yield off
        yield back
        yield CounterMetricFamily("llmplan_attention_offload_seconds", "measured attention-offload time",
                                  value=s.offload_measured_s_total)
        yield CounterMetricFamily("llmplan_attention_offload_estimate_seconds",
                                  "estimated (S/B + T_sync) attention-offload time",
                                  value=s.offload_estimate_s_total)
        yield CounterMetricFamily("llmplan_attention_offload_bytes", "KV bytes moved by attention offloads",
                                  value=float(s.offload_bytes_total))
        hosted = GaugeMetricFamily("llmplan_worker_hosted_kv_heads", "KV heads of other workers' layers "
                                   "each worker holds and computes attention for (summed over layers)",
                                   labels=["worker"])
        for r, n in enumerate(s.hosted_kv_heads):
            hosted.add_metric([str(r)], float(n))
        yield hosted
        layers = GaugeMetricFamily("llmplan_worker_layers", "decoder layers each worker holds",
                                   labels=["worker"])
        busy = CounterMetricFamily("llmplan_worker_busy_seconds", "each worker's compute time in steps (over "
                                   "llmplan_pipeline_step_seconds_total: its busy share)", labels=["worker"])
        for r, (lo, hi) in enumerate(s.ranges):
            layers.add_metric([str(r)], float(hi - lo))
            busy.add_metric([str(r)], float(s.busy_s_total[r]))
        yield layers
        yield busy
        yield CounterMetricFamily("llmplan_pipeline_step_seconds", "wall time of the instance's steps",
                                  value=s.step_s_total)
