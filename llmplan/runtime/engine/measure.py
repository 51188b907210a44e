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
    for context_len in (c for c in (256, 768) if c <= max_context):
        for n in (c for c in (64, 256) if c <= max_chunk):
            pts.append(Point(prefill=((n, context_len),)))
    batches = [b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max_batch]
    contexts = [c for c in (32, 256, 1024, 2048) if c <= max_context]
    for b in batches:
        for context_len in contexts:
            pts.append(Point(decode=(b, context_len)))
    for b in (c for c in (4, 16) if c <= max_batch):
        pts.append(Point(prefill=((min(128, max_chunk), 0),), decode=(b, min(256, max_context))))
    return pts


def _features(p: Point) -> tuple[int, float, int, int]:
    pt = sum(n for n, _ in p.prefill)
    pa = sum(n * (c + n / 2) for n, c in p.prefill)
    return pt, pa, p.decode[0], p.decode[0] * p.decode[1]


def _work_for(p: Point, block_size: int, vocab_size: int, gen: torch.Generator) -> list[SeqWork]:
    need = [-(-t // block_size) for t in p.tokens_needed()]
    work: list[SeqWork] = []
    nxt = 0
    for (n, c), nb in zip(p.prefill, need, strict=False):
        ids = torch.randint(3, vocab_size, (n,), generator=gen).tolist()
        work.append(SeqWork(ids, c, list(range(nxt, nxt + nb)), True, True))
        nxt += nb
    for nb in need[len(p.prefill) :]:
        tok = int(torch.randint(3, vocab_size, (1,), generator=gen))
        work.append(SeqWork([tok], p.decode[1], list(range(nxt, nxt + nb)), False, True))
        nxt += nb
    return work


def measure_points(
    executor: TorchExecutor,
    points: Iterable[Point],
    repeats: int = 3,
    vocab_size: int = 32000,
    progress: Callable[[Point], None] | None = None,
) -> list[Sample]:
    """Median time of each shape over ``repeats`` rounds.

    Rounds go over *all* shapes in turn (not shape after shape), so a burst of load from
    another process spreads over many shapes' repeats instead of biasing a few shapes, and
    the median discards it. ``progress`` is called once per timed run (``repeats`` per shape).
    """
    kv = executor.kv
    bs = kv.block_size
    gen = torch.Generator().manual_seed(0)
    plan: list[tuple[Point, list[SeqWork]]] = []
    for p in points:
        if sum(-(-t // bs) for t in p.tokens_needed()) > kv.num_blocks:
            for _ in range(repeats if progress else 0):
                progress(p)  # type: ignore[misc]
            continue  # does not fit this pool; skipped rather than faked
        plan.append((p, _work_for(p, bs, vocab_size, gen)))
    times: list[list[float]] = [[] for _ in plan]

    def run(work: list[SeqWork]) -> float:
        samplers = [_GREEDY] * len(work)
        if executor.sync_device:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        executor.run_work(work, samplers)
        if executor.sync_device:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _, work in plan:
        run(work)  # warm-up (allocator, kernels)
    for _ in range(repeats):
        for k, (p, work) in enumerate(plan):
            times[k].append(run(work))
            if progress:
                progress(p)
    samples = []
    for (p, _), ts in zip(plan, times, strict=True):
        pt, pa, ds, dc = _features(p)
        samples.append(Sample(p.kind, pt, pa, ds, dc, statistics.median(ts), p.label()))
    return samples
