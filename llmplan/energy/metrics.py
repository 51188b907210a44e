"""Energy on a server's ``/metrics``: what :class:`~llmplan.energy.measure.EnergyMeter` can read.

* ``llmplan_energy_source_info{source, note}`` = 1: ``nvml`` (GPU energy counters), ``rapl`` (CPU
  package energy only) or ``modelled`` (nothing to read: no joules are exported, the note says why).
* ``llmplan_energy_joules_total{device}``: joules since the server started, per GPU or RAPL zone.
* ``llmplan_power_watts{device}``: mean power since the previous scrape.

Joules per output token is ``rate(llmplan_energy_joules_total) / rate(llmplan_generation_tokens_total)``.
``LLMPLAN_POWERCAP`` overrides the RAPL directory (default ``/sys/class/powercap``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmplan.energy.measure import POWERCAP, EnergyMeter


class EnergyCollector(Collector):
    def __init__(self, meter: EnergyMeter | None = None) -> None:
        self.meter = meter or EnergyMeter(rapl_root=os.environ.get("LLMPLAN_POWERCAP") or POWERCAP)
        self.meter.start()
        self._t = time.monotonic()
        self._total: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        m = self.meter
        info = GaugeMetricFamily("llmplan_energy_source_info", "Where energy figures come from",
                                 labels=["source", "note"])
        info.add_metric([m.source, m.note], 1.0)
        yield info
        if m.source == "modelled":
            return
        # Accumulate per scrape and restart the interval: a RAPL counter wraps every few
        # hundred kJ, so one long interval would lose whole wraps.
        by = m.stop()["by_device"] or {}
        m.start()
        now = time.monotonic()
        for dev, v in by.items():
            self._total[dev] = self._total.get(dev, 0.0) + v
        j = CounterMetricFamily("llmplan_energy_joules", "Energy since the server started (measured)",
                                labels=["device"])
        for dev, v in self._total.items():
            j.add_metric([dev], v)
        yield j
        if now > self._t:
            p = GaugeMetricFamily("llmplan_power_watts", "Mean power since the previous scrape",
                                  labels=["device"])
            for dev, v in by.items():
                p.add_metric([dev], v / (now - self._t))
            yield p
        self._t = now
