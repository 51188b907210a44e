"""Time the engine's iterations on shaped batches (the data behind ``llmplan calibrate``).

Each point runs the executor's real step path (input flattening, paged attention, LM head,
sampling) on synthetic token ids with block tables drawn from the real KV pool, so what is
timed is what a serving step costs minus the scheduler's bookkeeping. KV contents are
whatever the pool holds: attention cost does not depend on the values.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from llmplan.runtime.calibration import Sample
from llmplan.runtime.engine.api import SamplingParams
from llmplan.runtime.engine.executor import TorchExecutor
from llmplan.runtime.engine.sampling import RequestSampler
from llmplan.runtime.engine.step_inputs import SeqWork

_GREEDY = RequestSampler(SamplingParams(temperature=0.0), 0)


@dataclass(frozen=True, slots=True)
class Point:
    """A step shape: ``prefill`` = [(chunk, context)], ``decode`` = (batch, context each)."""

    prefill: tuple[tuple[int, int], ...] = ()
    decode: tuple[int, int] = (0, 0)

    @property
    def kind(self) -> str:
        if self.prefill and self.decode[0]:
            return "mixed"
        return "prefill" if self.prefill else "decode"

    def tokens_needed(self) -> list[int]:
        out = [c + n for n, c in self.prefill]
        out += [self.decode[1] + 1] * self.decode[0]
        return out

    def label(self) -> str:
        parts = [f"prefill {n}@{c}" for n, c in self.prefill]
        if self.decode[0]:
            parts.append(f"decode {self.decode[0]}x@{self.decode[1]}")
        return " + ".join(parts)


def default_points(max_batch: int = 32, max_context: int = 1024, max_chunk: int = 512) -> list[Point]:
    pts: list[Point] = []
    chunks = [c for c in (16, 32, 64, 128, 256, 512, 1024) if c <= max_chunk]
    for n in chunks:
        pts.append(Point(prefill=((n, 0),)))
    for ctx in (c for c in (256, 768) if c <= max_context):
        for n in (c for c in (64, 256) if c <= max_chunk):
            pts.append(Point(prefill=((n, ctx),)))
    batches = [b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max_batch]
    contexts = [c for c in (32, 256, 1024, 2048) if c <= max_context]
    for b in batches:
        for ctx in contexts:
            pts.append(Point(decode=(b, ctx)))
    for b in (c for c in (4, 16) if c <= max_batch):
        pts.append(Point(prefill=((min(128, max_chunk), 0),), decode=(b, min(256, max_context))))
    return pts


def _features(p: Point) -> tuple[int, float, int, int]:
    pt = sum(n for n, _ in p.prefill)
    pa = sum(n * (c + n / 2) for n, c in p.prefill)
    return pt, pa, p.decode[0], p.decode[0] * p.decode[1]


def measure_points(
    executor: TorchExecutor,
    points: Iterable[Point],
    repeats: int = 3,
    vocab_size: int = 32000,
    progress: Callable[[Point], None] | None = None,
) -> list[Sample]:
    kv = executor.kv
    bs = kv.block_size
    gen = torch.Generator().manual_seed(0)
    samples: list[Sample] = []
    for p in points:
        need = [-(-t // bs) for t in p.tokens_needed()]
        if sum(need) > kv.num_blocks:
            if progress:
                progress(p)
            continue  # does not fit this pool; skipped rather than faked
        work: list[SeqWork] = []
        nxt = 0
        for (n, c), nb in zip(p.prefill, need, strict=False):
            ids = torch.randint(3, vocab_size, (n,), generator=gen).tolist()
            work.append(SeqWork(ids, c, list(range(nxt, nxt + nb)), True, True))
            nxt += nb
        for nb in need[len(p.prefill) :]:
            work.append(
                SeqWork(
                    [int(torch.randint(3, vocab_size, (1,), generator=gen))],
                    p.decode[1],
                    list(range(nxt, nxt + nb)),
                    False,
                    True,
                )
            )
            nxt += nb
        samplers = [_GREEDY] * len(work)
        executor.run_work(work, samplers)  # warm-up (allocator, kernels)
        times = []
        for _ in range(repeats):
            if executor.sync_device:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            executor.run_work(work, samplers)
            if executor.sync_device:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        pt, pa, ds, dc = _features(p)
        samples.append(Sample(p.kind, pt, pa, ds, dc, statistics.median(times), p.label()))
        if progress:
            progress(p)
    return samples
