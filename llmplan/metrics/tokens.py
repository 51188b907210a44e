"""Per-token emission times of a whole run, flattened once into numpy arrays.

A full-trace run records millions of token times; walking them per request in Python
dominated the metrics cost, so validation, per-request ITL and the pooled ITL all read
this one flat view.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from llmplan.metrics.types import RequestRecord


@dataclass(slots=True)
class TokenTimes:
    flat: np.ndarray  # every recorded token time, request after request
    starts: np.ndarray  # offset of each record's first token time in ``flat``
    counts: np.ndarray  # number of token times per record (0 when not recorded)

    def gaps(self) -> tuple[np.ndarray, np.ndarray]:
        """Inter-token gaps and, for each gap, the index of the record it belongs to."""
        if len(self.flat) < 2:
            return np.empty(0), np.empty(0, dtype=np.int64)
        d = np.diff(self.flat)
        owner = np.repeat(np.arange(len(self.counts)), self.counts)
        same = owner[1:] == owner[:-1]  # drop the jumps between consecutive records
        return d[same], owner[1:][same]

    def per_record(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and max gap per record (NaN for records with fewer than two token times)."""
        g, owner = self.gaps()
        mean = np.full(n, np.nan)
        mx = np.full(n, np.nan)
        if len(g):
            cnt = np.bincount(owner, minlength=n)
            tot = np.bincount(owner, weights=g, minlength=n)
            has = cnt > 0
            mean[has] = tot[has] / cnt[has]
            mx_all = np.full(n, -np.inf)
            np.maximum.at(mx_all, owner, g)
            mx[has] = mx_all[has]
        return mean, mx


def token_times(records: list[RequestRecord]) -> TokenTimes:
    lists = [r.token_times_s or () for r in records]
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    total = int(counts.sum())
    flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.float64, count=total)
    starts = np.zeros(len(lists), dtype=np.int64)
    if len(lists):
        np.cumsum(counts[:-1], out=starts[1:])
    return TokenTimes(flat, starts, counts)
