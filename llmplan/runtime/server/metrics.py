"""Prometheus metrics of one server, in a registry of its own.

Latency histograms are observed by the server per request (its own clock, from the
moment the request was accepted). Engine state (queue, running, KV blocks, preemptions,
predictor accuracy) is read from ``engine.stats()`` at scrape time by a collector, so the
numbers are never stale and the engine needs no Prometheus dependency.

Names: ``llmplan_requests_waiting`` and ``llmplan_kv_usage_ratio`` are what llmplan's
front end scrapes for load-aware routing (next to vLLM's ``vllm:`` equivalents).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmplan.runtime.engine.api import EngineStats

# Buckets from 5 ms to 10 min: CPU tiny models sit at the low end, 70B prefill at the top.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _EngineCollector(Collector):
    def __init__(self, stats: Callable[[], EngineStats], model: str) -> None:
        self._stats = stats
        self._model = model

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        labels = ["model"]
        v = [self._model]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(v, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(v, value)
            return c

        yield gauge("llmplan_requests_waiting", "Requests waiting in the engine queue", s.waiting)
        yield gauge("llmplan_requests_running", "Requests in the running batch", s.running)
        yield gauge("llmplan_kv_blocks_used", "KV cache blocks in use", s.kv_blocks_used)
        yield gauge("llmplan_kv_blocks_total", "KV cache blocks in the pool", s.kv_blocks_total)
        usage = s.kv_blocks_used / s.kv_blocks_total if s.kv_blocks_total else 0.0
        yield gauge("llmplan_kv_usage_ratio", "Share of KV cache blocks in use (0..1)", usage)
        yield gauge("llmplan_waiting_tokens", "Prompt tokens still to prefill in the engine queue",
                    s.waiting_tokens)
        yield counter("llmplan_busy_seconds", "Seconds the engine spent executing steps",
                      s.busy_seconds_total)
        yield counter("llmplan_preemptions", "Requests preempted (recompute) for lack of KV blocks",
                      s.preemptions_total)
        # vLLM's names and sense: prompt tokens looked up in / served from the GPU prefix cache.
        yield counter("llmplan_prefix_cache_queries", "Prompt tokens looked up in the GPU prefix cache",
                      s.prefix_cache_queries_total)
        yield counter("llmplan_prefix_cache_hits", "Prompt tokens served from the GPU prefix cache "
                      "(prefill saved)", s.prefix_cache_hits_total)
        q = s.prefix_cache_queries_total
        hit = s.prefix_cache_hits_total / q if q else 0.0
        yield gauge("llmplan_prefix_cache_hit_ratio", "Share of looked-up prompt tokens found cached", hit)
        yield counter("llmplan_engine_finished", "Requests the engine finished", s.finished_total)
        yield counter("llmplan_predictor_correct", "Length predictions in the right bucket",
                      s.predictor_correct)
        yield counter("llmplan_predictor_total", "Length predictions checked", s.predictor_total)
        acc = s.predictor_correct / s.predictor_total if s.predictor_total else float("nan")
        yield gauge("llmplan_predictor_accuracy_ratio",
                    "Bucket accuracy of the output-length predictor (NaN before any check)", acc)


class ServerMetrics:
    def __init__(self, stats: Callable[[], EngineStats], model: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("llmplan_ttft_seconds", "Time to first token", ["model"],
                              buckets=LATENCY_BUCKETS, registry=r).labels(model)
        self.tpot = Histogram("llmplan_tpot_seconds", "Mean time per output token after the first",
                              ["model"], buckets=TPOT_BUCKETS, registry=r).labels(model)
        self.e2e = Histogram("llmplan_e2e_seconds", "End-to-end request latency", ["model"],
                             buckets=LATENCY_BUCKETS, registry=r).labels(model)
        self.requests = Counter("llmplan_requests", "Requests by outcome", ["model", "outcome"], registry=r)
        self.prompt_tokens = Counter("llmplan_prompt_tokens", "Prompt tokens processed", ["model"],
                                     registry=r).labels(model)
        self.generation_tokens = Counter("llmplan_generation_tokens", "Tokens generated", ["model"],
                                         registry=r).labels(model)
        self.model = model
        r.register(_EngineCollector(stats, model))

    def outcome(self, outcome: str) -> None:
        """ok | length/stop (finish reasons) | abort | rejected_429 | bad_request | error | draining."""
        self.requests.labels(self.model, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
