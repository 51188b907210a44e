"""One worker's share of a model: its pipeline stage's decoder layers and their paged KV pools.

Rank 0 also holds the embedding, the final norm and the LM head, so the server process embeds,
samples with each request's own sampler, and the other workers only run layers. One step, on
every rank from the same :class:`~llmplan.runtime.engine.step_inputs.StepInputs`::

    rank 0: embed -> its layers -> hidden to rank 1 -> ... -> last rank: its layers
            -> the sampling rows' hidden back to rank 0 -> norm -> lm_head -> logits

A float64 vector of each stage's compute time travels with the hidden state, so rank 0 learns
every stage's busy time per step without another round trip.

A layer migration moves boundary layers between adjacent stages between two steps: the source
sends each layer's weights and the KV blocks in use as one flat message, the destination builds
the layer on the meta device (nothing initialised only to be overwritten) and loads both. Layer
indices are global, so block ids stay valid wherever a layer lives.

An attention migration offloads the last KV heads of a layer to another worker
(:mod:`.offload`): every rank keeps the instance's offload map, the owner wraps the layer, the
host keeps those heads' KV pools and answers one request per step for each layer it hosts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmplan.runtime.workers.comm import Comm
from llmplan.runtime.workers.offload import HeadOffload, HostedHeads, OffloadedHeadsLayer, check_offload
from llmplan.runtime.workers.stages import Ranges, apply_move, validate_ranges


@dataclass(slots=True)
class StageSource:
    """What every worker needs to build the same model: weights from a checkpoint or a seed."""

    dummy_weights: str | None = None  # catalog name (random weights from ``seed``)
    model_dir: str | None = None  # local HF checkpoint
    seed: int = 0
    dtype: str = "float32"
    block_size: int = 16
    num_blocks: int = 0
    device: str = "cpu"

    def config(self):
        from llmplan.runtime.engine.config import catalog_config, load_hf_config

        return load_hf_config(self.model_dir) if self.model_dir else catalog_config(str(self.dummy_weights))


def worker_device(device: str, rank: int) -> torch.device:
    """``cuda`` spreads the ranks over the visible GPUs; ``cpu`` (or an explicit index) is kept."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", rank % max(1, torch.cuda.device_count()))
    return dev


class StageWorker:
    def __init__(self, source: StageSource, rank: int, world: int, ranges: Ranges) -> None:
        from llmplan.runtime.engine.kvcache import PagedKVCache
        from llmplan.runtime.engine.loader import init_dummy_weights, load_hf_weights
        from llmplan.runtime.engine.model import DecoderLayer, LlamaModel
        from llmplan.runtime.engine.parts import resolve_dtype

        self.cfg = cfg = source.config()
        validate_ranges(ranges, cfg.num_layers)
        self.rank, self.world = rank, world
        self.ranges = list(ranges)
        self.dtype = resolve_dtype(source.dtype)
        self.device = worker_device(source.device, rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        # The whole model is built and then cut down, so every process derives identical weights
        # from one seed (or one checkpoint); a worker keeps only its stage.
        full = LlamaModel(cfg, [self.device] * cfg.num_layers, self.dtype)
        if source.model_dir:
            load_hf_weights(full, source.model_dir)
        else:
            init_dummy_weights(full, seed=source.seed)
        lo, hi = self.ranges[rank]
        self.layers = {i: full.layers[i] for i in range(lo, hi)}
        self.embed = full.embed_tokens if rank == 0 else None
        self.norm = full.norm if rank == 0 else None
        self.lm_head = full.lm_head_weight if rank == 0 else None
        self.rope = full.ropes[self.device]
        del full
        # The first meta-device construction and the first ``to_empty`` each pay a one-off lazy
        # import of seconds; pay it here, not inside the first migration.
        DecoderLayer(cfg, 0, torch.device("meta"), self.dtype).to_empty(device=self.device)
        devices = [self.device if lo <= i < hi else None for i in range(cfg.num_layers)]
        self.kv = PagedKVCache(cfg, source.num_blocks, source.block_size, devices, self.dtype)  # type: ignore[arg-type]
        self.block_size = source.block_size
        self.layer_weight_bytes = self._nbytes(self._layer_tensors(next(iter(self.layers.values()))))
        self.itemsize = torch.empty((), dtype=self.dtype).element_size()
        self.offloads: dict[int, HeadOffload] = {}  # the whole instance's, identical on every rank
        self.hosted: dict[int, HostedHeads] = {}  # the layers whose offloaded heads live here
        self._carry_s = 0.0  # serving done after this rank's times left: counted in the next step

    # ------------------------------------------------------------------ sizes
    @staticmethod
    def _nbytes(ts: Sequence[torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in ts)

    def kv_block_bytes(self) -> int:
        """One KV block of one layer (K and V)."""
        return 2 * self.block_size * self.cfg.num_kv_heads * self.cfg.head_dim * self.itemsize

    def weight_bytes(self) -> int:
        extra = [t for t in (getattr(self.embed, "weight", None), self.lm_head) if t is not None]
        if self.norm is not None:
            extra.append(self.norm.weight)
        uniq = {id(t): t for t in extra}  # a tied LM head is the embedding
        return len(self.layers) * self.layer_weight_bytes + self._nbytes(list(uniq.values()))

    def offload_bytes(self, kv_heads: int, num_blocks: int) -> int:
        """Bytes an attention offload of ``kv_heads`` heads of one layer sends (their K and V)."""
        return 2 * num_blocks * self.block_size * kv_heads * self.cfg.head_dim * self.itemsize

    def hosted_bytes(self) -> int:
        return sum(h.nbytes() for h in self.hosted.values())

    def migration_bytes(self, num_layers: int, num_blocks: int) -> int:
        """Bytes a migration of ``num_layers`` layers with ``num_blocks`` KV blocks sends."""
        return num_layers * (self.layer_weight_bytes + num_blocks * self.kv_block_bytes())

    # ------------------------------------------------------------------ one step
    @torch.inference_mode()
    def forward(self, comm: Comm | None, inputs) -> tuple[torch.Tensor | None, torch.Tensor]:
        """This rank's part of one step. Rank 0 returns (logits of the sampling rows or None,
        every stage's compute seconds); other ranks return (None, their own entry filled).

        A rank's compute seconds include the attention it serves for other workers' layers and
        exclude the time its own offloaded layers wait for their hosts."""
        world = self.world
        times = torch.zeros(world, dtype=torch.float64)
        t = int(inputs.input_ids.numel())
        s = len(inputs.order)
        pre = [h for i, h in sorted(self.hosted.items()) if h.off.owner < self.rank]
        post = [h for i, h in sorted(self.hosted.items()) if h.off.owner > self.rank]
        served = self._serve(comm, pre, t, inputs.meta) + self._carry_s
        self._carry_s = 0.0
        if self.rank == 0:
            tb = time.perf_counter()
            x = self.embed(inputs.input_ids)
        else:
            x = torch.empty((t, self.cfg.hidden_size), dtype=self.dtype, device=self.device)
            comm.recv(x, self.rank - 1)
            self._recv_times(comm, times, self.rank - 1)
            tb = time.perf_counter()
        waited = self._waited()
        x = self._run_layers(x, inputs.positions, inputs.meta)
        last = self.rank == world - 1
        rows = x[inputs.logits_index] if last else None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        times[self.rank] = time.perf_counter() - tb - (self._waited() - waited) + served
        if not last:
            comm.send(x, self.rank + 1)
            self._send_times(comm, times, self.rank + 1)
        elif world > 1:
            if s:
                comm.send(rows, 0)
            self._send_times(comm, times, 0)
        if self.rank != 0:
            self._carry_s = self._serve(comm, post, t, inputs.meta)
            return None, times
        served = self._serve(comm, post, t, inputs.meta)
        th = time.perf_counter()
        if world > 1:
            rows = torch.empty((s, self.cfg.hidden_size), dtype=self.dtype, device=self.device)
            if s:
                comm.recv(rows, world - 1)
            self._recv_times(comm, times, world - 1)  # slot 0 comes back as rank 0 sent it
            th = time.perf_counter()
        logits = None
        if s:
            from llmplan.runtime.engine.model import linear

            logits = linear(self.norm(rows), self.lm_head).float()
        times[0] += time.perf_counter() - th + served
        return logits, times

    def _serve(self, comm: Comm | None, hosted: list[HostedHeads], tokens: int, meta) -> float:
        """Answer this step's request of each hosted layer, in layer order; returns the seconds
        spent computing them."""
        return sum(h.serve(comm, tokens, meta) for h in hosted)

    def _waited(self) -> float:
        return sum(layer.wait_s for layer in self.layers.values() if isinstance(layer, OffloadedHeadsLayer))

    def _send_times(self, comm: Comm, times: torch.Tensor, dst: int) -> None:
        comm.send(times.to(self.device), dst)

    def _recv_times(self, comm: Comm, times: torch.Tensor, src: int) -> None:
        buf = torch.empty_like(times, device=self.device)
        comm.recv(buf, src)
        times.copy_(buf.cpu())

    def _run_layers(self, x: torch.Tensor, positions: torch.Tensor, meta) -> torch.Tensor:
        cos, sin = self.rope(positions)
        lo, hi = self.ranges[self.rank]
        for i in range(lo, hi):
            x = self.layers[i](x, cos, sin, meta, self.kv)
        return x

    # ------------------------------------------------------------------ migration
    def _layer_tensors(self, layer) -> list[torch.Tensor]:
        return [t for _, t in sorted(layer.state_dict(keep_vars=True).items())]

    def migrate(self, comm: Comm, layers: Sequence[int], src: int, dst: int, blocks: Sequence[int]) -> float:
        """Every rank calls this between two steps; returns the seconds from the first barrier to
        the last (the measured migration time, barriers included as in ``T_sync``)."""
        new_ranges = apply_move(self.ranges, layers, src, dst)
        idx = torch.tensor(sorted(blocks), dtype=torch.long, device=self.device)
        comm.barrier()
        t0 = time.perf_counter()
        if self.rank == src:
            self._send_layers(comm, layers, dst, idx)
        elif self.rank == dst:
            self._recv_layers(comm, layers, src, idx)
        self.ranges = new_ranges
        comm.barrier()
        return time.perf_counter() - t0

    def _send_layers(self, comm: Comm, layers: Sequence[int], dst: int, blocks: torch.Tensor) -> None:
        for i in layers:
            assert i not in self.offloads, f"layer {i} has offloaded heads: restore them before moving it"
            layer = self.layers.pop(i)
            k, v = self.kv.k[i], self.kv.v[i]
            parts = [*self._layer_tensors(layer), k[blocks], v[blocks]]
            comm.send(torch.cat([t.detach().reshape(-1) for t in parts]), dst)
            self.kv.k[i] = self.kv.v[i] = None  # the layer lives elsewhere now: free its pools

    def _recv_layers(self, comm: Comm, layers: Sequence[int], src: int, blocks: torch.Tensor) -> None:
        from llmplan.runtime.engine.model import DecoderLayer

        shape = (self.kv.num_blocks, self.kv.block_size, self.cfg.num_kv_heads, self.cfg.head_dim)
        kv_numel = len(blocks) * shape[1] * shape[2] * shape[3]
        for i in layers:
            layer = DecoderLayer(self.cfg, i, torch.device("meta"), self.dtype).to_empty(device=self.device)
            layer.device = self.device
            params = self._layer_tensors(layer)
            flat = torch.empty(sum(t.numel() for t in params) + 2 * kv_numel, dtype=self.dtype,
                               device=self.device)
            comm.recv(flat, src)
            off = 0
            with torch.no_grad():
                for t in params:
                    t.copy_(flat[off : off + t.numel()].view_as(t))
                    off += t.numel()
                pools = []
                for _ in range(2):
                    pool = torch.zeros(shape, dtype=self.dtype, device=self.device)
                    pool[blocks] = flat[off : off + kv_numel].view(len(blocks), *shape[1:])
                    off += kv_numel
                    pools.append(pool)
            self.layers[i] = layer
            self.kv.k[i], self.kv.v[i] = pools

    # ------------------------------------------------------------------ attention migration
    def offload(self, comm: Comm, off: HeadOffload, blocks: Sequence[int]) -> float:
        """Every rank calls this between two steps: the owner hands the KV of the layer's last
        ``off.kv_heads`` heads (blocks in use) to the host; returns the seconds between barriers."""
        check_offload(self.cfg.num_kv_heads, off.kv_heads)
        if off.layer in self.offloads:
            raise ValueError(f"layer {off.layer} is offloaded already")
        kl = off.local_kv(self.cfg.num_kv_heads)
        idx = torch.tensor(sorted(blocks), dtype=torch.long, device=self.device)
        comm.barrier()
        t0 = time.perf_counter()
        if self.rank == off.owner:
            k, v = self.kv.layer(off.layer)
            if len(idx):
                comm.send(torch.cat([k[idx][:, :, kl:].reshape(-1), v[idx][:, :, kl:].reshape(-1)]), off.host)
            self.layers[off.layer] = OffloadedHeadsLayer(self.layers[off.layer], off, comm)
        elif self.rank == off.host:
            shape = (self.kv.num_blocks, self.block_size, off.kv_heads, self.cfg.head_dim)
            pools = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(2)]
            if len(idx):
                n = len(idx) * self.block_size * off.kv_heads * self.cfg.head_dim
                flat = torch.empty(2 * n, dtype=self.dtype, device=self.device)
                comm.recv(flat, off.owner)
                for j, pool in enumerate(pools):
                    pool[idx] = flat[j * n : (j + 1) * n].view(len(idx), *shape[1:])
            self.hosted[off.layer] = HostedHeads(off, self.cfg, *pools)
        self.offloads[off.layer] = off
        comm.barrier()
        return time.perf_counter() - t0

    def restore(self, layers: Sequence[int]) -> None:
        """Undo the offloads of ``layers``: nothing travels, the owner's pool is complete."""
        for i in layers:
            off = self.offloads.pop(i, None)
            if off is None:
                continue
            if self.rank == off.owner:
                self.layers[i] = self.layers[i].inner
            elif self.rank == off.host:
                del self.hosted[i]
