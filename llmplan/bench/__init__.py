"""Benchmark orchestration: the compared systems (:mod:`llmplan.bench.systems`), simulated runs
(:mod:`llmplan.bench.runner`, :mod:`llmplan.bench.jobs`) and live deployments
(:mod:`llmplan.bench.live`). Rendering the results is :mod:`llmplan.report`'s."""
