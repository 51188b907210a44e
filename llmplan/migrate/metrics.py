"""Prometheus export of the migration controller: ``REGISTRY.register(ControllerCollector(ctl))``.

Every counter of :attr:`MigrationController.counters` becomes ``llmplan_migration_<name>_total``
(decisions by kind, skips by reason, bytes and seconds moved, the measured and estimated
migration time); the current over/underloaded set sizes are gauges. Read at scrape time, so the
controller stays a plain object with no Prometheus dependency.
"""

from __future__ import annotations

from collections.abc import Iterator

from llmplan.migrate.controller import MigrationController


class ControllerCollector:
    def __init__(self, controller: MigrationController, prefix: str = "llmplan_migration") -> None:
        self.controller = controller
        self.prefix = prefix

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, value in sorted(self.controller.counters.items()):
            doc = f"migration controller: {name.replace('_', ' ')}"
            yield CounterMetricFamily(f"{self.prefix}_{name}", doc, value=float(value))
        yield GaugeMetricFamily(f"{self.prefix}_overloaded_workers", "workers in the overloaded set",
                                value=len(self.controller.overloaded))
        yield GaugeMetricFamily(f"{self.prefix}_underloaded_workers", "workers in the underloaded set",
                                value=len(self.controller.underloaded))
