"""Sample a server's ``/metrics`` during a live run into :class:`InstanceSample` rows.

Understands llmplan serve's gauges and vLLM's. vLLM exports KV usage only as a ratio, so
its samples carry it per mille (``kv_blocks_total = 1000``). ``busy_frac`` is 1 when the
server had requests running at the sample and 0 otherwise: a client cannot see compute
time, and an engine with work in its batch is computing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmplan.metrics.types import InstanceSample

_NAMES = {
    "running": ("llmplan_requests_running", "vllm:num_requests_running"),
    "waiting": ("llmplan_requests_waiting", "vllm:num_requests_waiting"),
    "kv_used": ("llmplan_kv_blocks_used",),
    "kv_total": ("llmplan_kv_blocks_total",),
    "kv_ratio": ("llmplan_kv_usage_ratio", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "preemptions": ("llmplan_preemptions_total", "vllm:num_preemptions_total"),
}


def parse_metrics(text: str) -> dict[str, float]:
    """The first value of each known metric, summed over its label sets."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for key, names in _NAMES.items():
                if sample.name in names:
                    values[key] = values.get(key, 0.0) + float(sample.value)
    return values


class ServerScraper:
    def __init__(self, client: httpx.AsyncClient, target: str, instance: str) -> None:
        self._client = client
        self._url = target + "/metrics"
        self._instance = instance
        self.samples: list[InstanceSample] = []
        self._preempt_first: float | None = None
        self._preempt_last: float | None = None
        self.available = True

    async def sample(self, t0: float) -> None:
        if not self.available:
            return
        try:
            resp = await self._client.get(self._url, timeout=5.0)
            values = parse_metrics(resp.text) if resp.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return
        if "running" not in values:
            self.available = False  # not a server we understand; stop asking
            return
        if "preemptions" in values:
            if self._preempt_first is None:
                self._preempt_first = values["preemptions"]
            self._preempt_last = values["preemptions"]
        if "kv_used" in values and values.get("kv_total"):
            used, total = int(values["kv_used"]), int(values["kv_total"])
        else:
            used, total = round(1000 * values.get("kv_ratio", 0.0)), 1000
        running = int(values["running"])
        self.samples.append(
            InstanceSample(
                t_s=max(0.0, time.monotonic() - t0),
                instance=self._instance,
                running=running,
                waiting=int(values.get("waiting", 0)),
                kv_blocks_used=used,
                kv_blocks_total=total,
                busy_frac=1.0 if running > 0 else 0.0,
            )
        )

    async def run(self, t0: float, interval_s: float) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.sample(t0)
            await asyncio.sleep(interval_s)

    def counters(self) -> dict[str, float]:
        if self._preempt_first is None or self._preempt_last is None:
            return {}
        return {"preemptions": self._preempt_last - self._preempt_first}
