"""Synthetic workloads: Poisson or Gamma arrivals, lognormal or empirical lengths.

Gamma inter-arrivals with shape ``1/cv^2`` give the requested rate and coefficient of
variation (cv = 1 is Poisson; cv > 1 is burstier, as in AlpaServe/DistServe sweeps).
Everything draws from one seeded generator, so a seed fixes the workload exactly.
"""

from __future__ import annotations

import numpy as np

from llmplan.errors import LlmplanError


def arrivals(
    n: int, rate: float, *, cv: float = 1.0, process: str = "poisson", rng: np.random.Generator
) -> np.ndarray:
    if rate <= 0 or not np.isfinite(rate):
        raise LlmplanError(f"arrival rate must be a positive number of requests/s, got {rate}")
    if process == "poisson":
        gaps = rng.exponential(1.0 / rate, size=n)
    elif process == "gamma":
        if cv <= 0:
            raise LlmplanError(f"gamma arrivals need cv > 0, got {cv}")
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n)
    else:
        raise LlmplanError(f"unknown arrival process {process!r}; use poisson or gamma")
    # The first request arrives at 0 so a run starts busy, like a trace re-based to its start.
    gaps[0] = 0.0
    return np.cumsum(gaps)


def lognormal_lengths(
    n: int, mean: float, sigma: float, lo: int, hi: int, rng: np.random.Generator
) -> np.ndarray:
    """Lognormal with the given mean (not median) and log-space sigma, rounded and clipped."""
    if mean <= 0 or sigma < 0:
        raise LlmplanError(f"lognormal lengths need mean > 0 and sigma >= 0, got mean={mean} sigma={sigma}")
    mu = np.log(mean) - sigma * sigma / 2.0
    return np.clip(np.rint(rng.lognormal(mu, sigma, size=n)), lo, hi).astype(np.int64)


def empirical_lengths(
    n: int, prompt_pool: np.ndarray, output_pool: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Resample (prompt, output) pairs jointly so their correlation survives."""
    idx = rng.integers(0, len(prompt_pool), size=n)
    return prompt_pool[idx], output_pool[idx]
