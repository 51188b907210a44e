"""The global KV store inside ``llmplan serve``: an executor that prefills over the store.

:class:`StoreExecutor` is the engine's :class:`~llmplan.runtime.engine.executor.TorchExecutor`
with one change in what a step computes, so the shared Scheduler (admission, block tables,
chunking, preemption) is untouched:

* a prefill chunk asks the store for the longest run of cached blocks from its first block
  boundary on (for a prompt's first chunk, its cached prefix; for a later chunk of a long
  prompt, the cached blocks that continue what is already in the pool); those tokens are not
  computed -- their KV is loaded layer by layer and copied into the request's own blocks of the
  paged pool by the loader thread (layer ``i+1`` while layer ``i`` runs). At least one token
  after the loaded blocks is always computed (the chunk's hidden rows, and the prompt's last
  token's logits); a chunk that starts inside a block also computes the head up to the boundary;
* every full block a prefill step completes goes back to the store (layer ``i``'s blocks are
  written by a background thread while layer ``i+1`` computes);
* all other work in the batch (decodes, later chunks, prompts with no hit) runs in the same
  layer-by-layer pass, so a hit never splits a batch.

A step without hits or new full blocks (pure decode) runs the plain fused forward, exactly as
without a store. The sampled token comes from each request's own sampler, as in the base
executor. A cached block that turns out missing or corrupt half-way (another process evicted
it, a file rotted) aborts that pass; the step is re-planned without it and re-run -- the KV
written by the aborted pass is overwritten by identical values, and nothing partial is served.

With scheduled hits (:meth:`StoreExecutor.prefix_probe` given to the Scheduler), admission
starts a prompt at its cached prefix, so the step budget covers only the uncached rest; the step
that admits it re-matches the store from block 0, loads what is still there into the request's
pool blocks and computes the rest of the promised prefix as a head span -- a block lost between
the promise and the load costs compute, never correctness.

Keys are chained block hashes namespaced by the model's identity (:func:`model_namespace`), so
servers of different models (or weights, dtypes, block sizes) sharing one directory never
alias each other's blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from llmplan.errors import LlmplanError
from llmplan.kvstore.hashing import block_hashes
from llmplan.kvstore.pipeline import LayerwisePrefill, PrefillTiming
from llmplan.kvstore.store import GlobalKVStore
from llmplan.runtime.core.types import ScheduledBatch, SeqState
from llmplan.runtime.engine.executor import TorchExecutor
from llmplan.runtime.engine.model import linear
from llmplan.runtime.engine.sampling import RequestSampler, sample
from llmplan.runtime.engine.step_inputs import SeqWork, build_step_inputs

MEMORY_ONLY = "memory"
_PROBE_CACHE = 1024  # sequences whose block keys the prefix probe keeps (LRU)


# --------------------------------------------------------------------------- identity and setup
def model_namespace(cfg, weights: str, dtype: torch.dtype | str, block_size: int) -> str:
    """A string naming everything that determines a block's KV: architecture, weights, dtype,
    block size. ``weights`` is ``dummy:NAME:seed=S`` or a checkpoint directory (its weight
    files' names, sizes and mtimes are folded in, so re-exported weights get new keys)."""
    arch = {k: v for k, v in asdict(cfg).items() if k not in ("extra", "name")}
    ident = weights
    p = Path(weights)
    if not weights.startswith("dummy:") and p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt"))
        ident = str(p.resolve()) + "|" + ",".join(
            f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files
        )
    digest = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:16]
    dt = str(dtype).removeprefix("torch.")
    return f"{cfg.name}|arch={digest}|weights={ident}|dtype={dt}|bs={block_size}"


def open_store(spec: str | os.PathLike, num_layers: int, memory_mb: int,
               disk_gb: float | None = None) -> GlobalKVStore:
    """``spec`` is a directory (memory tier + disk tier shared through it) or ``"memory"``."""
    if memory_mb < 0:
        raise LlmplanError(f"--kv-store-memory-mb must be >= 0 (got {memory_mb})")
    if disk_gb is not None and disk_gb <= 0:
        raise LlmplanError(f"--kv-store-disk-gb must be > 0 (got {disk_gb}); omit it for no limit")
    if str(spec) == MEMORY_ONLY:
        if memory_mb == 0:
            raise LlmplanError("--kv-store memory with --kv-store-memory-mb 0 stores nothing; "
                               "give the memory tier some room or pass a directory")
        return GlobalKVStore(num_layers, memory_bytes=memory_mb << 20)
    if not str(spec).strip():
        raise LlmplanError("--kv-store needs a directory (or 'memory' for a memory-only store)")
    root = Path(spec).expanduser()
    if root.exists() and not root.is_dir():
        raise LlmplanError(f"--kv-store {root} is a file; point it at a directory (it is created if missing)")
    disk_bytes = None if disk_gb is None else int(disk_gb * 2**30)
    store = GlobalKVStore(num_layers, memory_bytes=memory_mb << 20, disk_dir=root, disk_bytes=disk_bytes)
    if not os.access(root, os.W_OK | os.X_OK):
        raise LlmplanError(f"--kv-store {root} is not writable; pick a directory this user can write")
    return store


# --------------------------------------------------------------------------- accounting
@dataclass(slots=True)
class ServingStats:
    """What the store did for the served requests (exported on /metrics)."""

    lookups: int = 0  # prefill chunks that could load (a block boundary before their last token)
    hit_blocks: int = 0  # full blocks of those chunks loaded from the store
    miss_blocks: int = 0  # full blocks of those chunks computed
    hit_tokens: int = 0  # prompt tokens whose KV came from the store instead of a forward pass
    miss_tokens: int = 0  # tokens of those chunks computed
    written_blocks: int = 0  # full blocks written back
    retries: int = 0  # passes re-run because a cached block vanished or was corrupt
    # Scheduled hits: prefix blocks the scheduler was told at admission need no computing.
    promised_blocks: int = 0  # blocks promised by the prefix probe
    promised_loaded_blocks: int = 0  # of those, loaded from the store in the admitting step
    promised_recomputed_blocks: int = 0  # of those, gone or corrupt by then: computed in that step
    load_s: float = 0.0  # loader thread busy time
    load_stall_s: float = 0.0  # compute waited for a load
    store_s: float = 0.0  # writer thread busy time
    store_tail_s: float = 0.0  # step waited for the last write-backs

    def add_timing(self, t: PrefillTiming) -> None:
        self.load_s += t.load_s
        self.load_stall_s += t.load_stall_s
        self.store_s += t.store_s
        self.store_tail_s += t.store_tail_s


@dataclass(slots=True)
class SeqPlan:
    """One prefill item's business with the store in this step."""

    keys: list[bytes]  # chained keys of every full block of tokens[0:end]
    first: int  # block index where this chunk starts (loads start here)
    load_cap: int  # block index loads stop before (== first: this chunk cannot load)
    hit: int = 0  # blocks loaded: [first, first + hit)
    write: list[int] = field(default_factory=list)  # block indices written back

    @property
    def loads(self) -> bool:
        return self.load_cap > self.first


@dataclass(slots=True)
class LayerwiseOutcome:
    logits: torch.Tensor | None  # [S, vocab] fp32, rows in ``order``
    order: list[int]  # order[k] = index (in the caller's work list) of logits row k's item
    timing: PrefillTiming
    cached_tokens: list[int]  # per work item: tokens loaded from the store
    retries: int = 0  # passes re-run because a cached block was lost half-way


# --------------------------------------------------------------------------- the layer-wise step
class LayerwiseStep:
    """One engine step run layer by layer, loading cached prefixes and writing new blocks back."""

    def __init__(self, model, kv, store: GlobalKVStore, pipe: LayerwisePrefill, namespace: str) -> None:
        if not (model.is_first and model.is_last):
            raise LlmplanError("the KV store needs a whole-model instance (all layers in one process)")
        if store.num_layers != model.cfg.num_layers:
            raise LlmplanError(f"the store has {store.num_layers} layers, the model {model.cfg.num_layers}")
        self.model, self.kv, self.store, self.pipe, self.namespace = model, kv, store, pipe, namespace
        self.bs = kv.block_size

    def plan(self, tokens: Sequence[int], context_len: int, end: int) -> SeqPlan | None:
        """``tokens`` are the sequence's known tokens, this step computes ``[context_len, end)``.

        Every prefill chunk may load: the first chunk of a prompt its cached prefix, a later
        chunk (a long prompt under ``--max-num-batched-tokens``, whose chunk edges the token
        budget puts anywhere) the cached blocks from its first block boundary on. Keys are
        chained, so block ``j``'s entry is valid after any way of producing blocks ``0..j-1``.
        """
        bs = self.bs
        if end // bs <= context_len // bs:
            return None  # completes no block and cannot load one
        keys = block_hashes(tokens[:end], bs, self.namespace)
        first = -(-context_len // bs)
        # At least one token of the chunk is computed after the loaded blocks: the chunk must
        # produce its hidden rows (and the prompt's last token its logits).
        return SeqPlan(keys, first=first, load_cap=max(first, (end - 1) // bs))

    def _match(self, plan: SeqPlan, w: SeqWork, tokens: Sequence[int], end: int) -> list[SeqWork]:
        """The item's work after the lookup: one span, or -- when a chunk that starts inside a
        block loads -- two spans of the same sequence in one step: the head up to the block
        boundary, then the tail after the loaded blocks. The KV of both is written into the pool
        before any attention of the layer reads it, so the tail sees the head (and the loaded
        blocks) as context."""
        plan.hit = self.store.match_prefix(plan.keys[plan.first: plan.load_cap]) if plan.loads else 0
        c, bs = w.context_len, self.bs
        # Blocks this step completes, unless another request or process already stored them.
        loaded = range(plan.first, plan.first + plan.hit)
        plan.write = [j for j in range(c // bs, len(plan.keys))
                      if j not in loaded and not self.store.has_block(plan.keys[j])]
        if not plan.hit:
            return [w]
        b, p = plan.first * bs, (plan.first + plan.hit) * bs
        tail = SeqWork(list(tokens[p:end]), p, w.block_ids, w.is_prefill, w.sample)
        if b == c:
            return [tail]
        return [SeqWork(list(tokens[c:b]), c, w.block_ids, w.is_prefill, False), tail]

    def _slots(self, block_ids: Sequence[int], blocks: Sequence[int]) -> list[int]:
        bs = self.bs
        return [block_ids[j] * bs + o for j in blocks for o in range(bs)]

    @torch.inference_mode()
    def run(self, work: list[SeqWork], plans: list[SeqPlan | None], tokens: list[Sequence[int]],
            ends: list[int]) -> LayerwiseOutcome:
        """Run ``work`` (the base executor's items) with ``plans`` (``None`` for plain items)."""
        # Each failed pass dropped at least one cached block, so this ends.
        for attempt in range(sum(len(p.keys) for p in plans if p is not None) + 2):
            spans: list[SeqWork] = []
            owner: list[int] = []  # spans[k] belongs to work[owner[k]]
            for i, (w, p, t, e) in enumerate(zip(work, plans, tokens, ends, strict=True)):
                parts = [w] if p is None else self._match(p, w, t, e)
                spans += parts
                owner += [i] * len(parts)
            out = self._pass(spans, owner, plans)
            if out is not None:
                out.retries = attempt
                return out
        raise LlmplanError("the KV store kept losing blocks during one step; check the store's disk")

    def _pass(self, work: list[SeqWork], owner: list[int], plans: list[SeqPlan | None]
              ) -> LayerwiseOutcome | None:
        model = self.model
        cfg = model.cfg
        cached: list[bytes] = []
        prefix_blocks: list[int] = []  # pool block id of each cached block, in load order
        new_keys: list[bytes] = []
        wb_slots: list[int] = []
        for i, p in enumerate(plans):
            if p is not None:
                w = work[owner.index(i)]  # any span of the item: they share the block table
                cached += p.keys[p.first: p.first + p.hit]
                prefix_blocks += w.block_ids[p.first: p.first + p.hit]
                if self.pipe.write_back:
                    new_keys += [p.keys[j] for j in p.write]
                    wb_slots += self._slots(w.block_ids, p.write)
        inputs = build_step_inputs(work, self.bs, model.input_device)
        order = [owner[k] for k in inputs.order]
        if not cached and not new_keys:  # nothing to load or store after all: the fused forward
            logits = model(inputs.input_ids, inputs.positions, inputs.meta, self.kv, inputs.logits_index)
            return LayerwiseOutcome(logits if inputs.order else None, order, PrefillTiming(),
                                    [0] * len(plans))
        per_dev: dict[torch.device, tuple] = {}

        def compute(i: int, x: torch.Tensor, past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            layer = model.layers[i - model.layer_start]
            dev = layer.device
            if dev not in per_dev:  # layers may sit on several devices (a --plan device map)
                cos, sin = model.ropes[dev](inputs.positions.to(dev))
                per_dev[dev] = (cos, sin, inputs.meta.to(dev),
                                torch.tensor(wb_slots, dtype=torch.long, device=dev))
            cos, sin, meta, wslots = per_dev[dev]
            k_pool, v_pool = self.kv.layer(i)
            flat_k = k_pool.view(-1, cfg.num_kv_heads, cfg.head_dim)
            flat_v = v_pool.view(-1, cfg.num_kv_heads, cfg.head_dim)
            x = layer(x.to(dev), cos, sin, meta, self.kv)
            return x, torch.stack([flat_k[wslots], flat_v[wslots]])

        def place(i: int, parts: list[torch.Tensor]) -> None:
            # On the loader thread, while layer i-1 computes: the cached blocks go straight into
            # the request's own blocks of layer i's pool (one block-sized copy each, no staging).
            k_pool, v_pool = self.kv.layer(i)
            for bid, part in zip(prefix_blocks, parts, strict=True):
                k_pool[bid].copy_(part[0], non_blocking=True)
                v_pool[bid].copy_(part[1], non_blocking=True)

        hidden = model.embed_tokens(inputs.input_ids)
        res = self.pipe.run(compute, hidden, cfg.num_layers, cached, new_keys, self.bs, keep_kv=False,
                            place=place)
        if res is None:
            return None  # a cached block was lost mid-way (and dropped): the caller re-plans
        logits = None
        if inputs.order:
            x = res.hidden[inputs.logits_index.to(res.hidden.device)]
            logits = linear(model.norm(x), model.lm_head_weight).float()
        cached_tokens = [0 if p is None else p.hit * self.bs for p in plans]
        return LayerwiseOutcome(logits, order, res.timing, cached_tokens)


# --------------------------------------------------------------------------- the executor
class StoreExecutor(TorchExecutor):
    """:class:`TorchExecutor` whose prefills read and feed the global KV store."""

    def __init__(self, model, kv, store: GlobalKVStore, namespace: str, prefetch_depth: int = 1,
                 sync_device: bool = True) -> None:
        super().__init__(model, kv, sync_device=sync_device)
        self.store = store
        self.namespace = namespace
        self.pipe = LayerwisePrefill(store, model.input_device, prefetch_depth=prefetch_depth)
        self.step_runner = LayerwiseStep(model, kv, store, self.pipe, namespace)
        k0 = kv.layer(model.layer_start)[0]
        store.expect_blocks((2, *k0.shape[1:]), k0.dtype)  # [K|V, block_size, kv_heads, head_dim]
        self.stats = ServingStats()
        self._probe_keys: OrderedDict[int, tuple[int, list[bytes]]] = OrderedDict()

    def close(self) -> None:
        self.pipe.close()

    def prefix_probe(self, seq: SeqState) -> int:
        """The scheduler's :class:`~llmplan.runtime.core.scheduler.PrefixProbe`: tokens of the
        sequence's cached prefix in the store, leaving at least its last known token to compute.
        Only a promise: the admitting step loads those blocks, or computes any that went away
        since (:meth:`run_batch`), so a lost block costs time, never correctness."""
        n = len(seq.prompt_token_ids) + len(seq.output_token_ids) - 1
        bs = self.step_runner.bs
        if n < bs:
            return 0
        # A blocked queue head is probed at every step until it fits: hash its tokens once.
        cached = self._probe_keys.get(seq.rid)
        if cached is None or cached[0] != n:
            toks = seq.prompt_token_ids + seq.output_token_ids
            cached = (n, block_hashes(toks[:n], bs, self.namespace))
            self._probe_keys[seq.rid] = cached
            if len(self._probe_keys) > _PROBE_CACHE:
                self._probe_keys.popitem(last=False)
        else:
            self._probe_keys.move_to_end(seq.rid)
        return self.store.match_prefix(cached[1]) * bs

    def run_batch(self, batch: ScheduledBatch, work: list[SeqWork],
                  samplers: list[RequestSampler]) -> list[int | None]:
        tokens: list[Sequence[int]] = []
        ends: list[int] = []
        plans: list[SeqPlan | None] = []
        promised: list[int] = []
        for k, it in enumerate(batch.items):
            seq = it.seq
            toks = seq.prompt_token_ids + seq.output_token_ids if it.is_prefill else []
            end = it.context_len + it.num_new_tokens
            start = it.context_len
            if it.cached_prefix:
                # The scheduler started this sequence at the probed context; its blocks [0, c)
                # are still empty. Plan the step as if it computed from token 0: the store's
                # hits (re-matched now) load into those blocks, and whatever is no longer there
                # is computed in this same step, so nothing is ever read from an empty block.
                start = 0
                w = work[k]
                work[k] = SeqWork(list(toks[:end]), 0, w.block_ids, w.is_prefill, w.sample)
            tokens.append(toks)
            ends.append(end)
            promised.append(it.cached_prefix // self.step_runner.bs)
            plans.append(self.step_runner.plan(toks, start, end) if it.is_prefill else None)
        if any(p is not None for p in plans):
            return self._run_layerwise(work, samplers, plans, tokens, ends, promised)
        return self.run_work(work, samplers)

    def _run_layerwise(self, work: list[SeqWork], samplers: list[RequestSampler], plans: list[SeqPlan | None],
                       tokens: list[Sequence[int]], ends: list[int], promised: list[int]
                       ) -> list[int | None]:
        out = self.step_runner.run(work, plans, tokens, ends)
        s = self.stats
        for w, p, cached, end, pb in zip(work, plans, out.cached_tokens, ends, promised, strict=True):
            if p is None:
                continue
            if pb:
                loaded = min(p.hit, pb)
                s.promised_blocks += pb
                s.promised_loaded_blocks += loaded
                s.promised_recomputed_blocks += pb - loaded
            s.written_blocks += len(p.write)
            if p.loads:
                s.lookups += 1
                s.hit_blocks += p.hit
                s.miss_blocks += len(p.keys) - p.first - p.hit
                s.hit_tokens += cached
                s.miss_tokens += end - w.context_len - cached
        s.retries += out.retries
        s.add_timing(out.timing)
        sampled: list[int | None] = [None] * len(work)
        if out.logits is not None:
            for i, t in zip(out.order, sample(out.logits, [samplers[i] for i in out.order]), strict=True):
                sampled[i] = t
        return sampled


def build_store_executor(model, kv, spec: str | os.PathLike, memory_mb: int, weights: str,
                         disk_gb: float | None = None) -> StoreExecutor:
    """What ``build_engine(kv_store=...)`` plugs in: the store opened, namespaced to this model."""
    store = open_store(spec, model.cfg.num_layers, memory_mb, disk_gb)
    ns = model_namespace(model.cfg, weights, model.dtype, kv.block_size)
    return StoreExecutor(model, kv, store, ns)
