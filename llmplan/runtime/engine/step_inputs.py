"""Flatten one iteration's work into the model's inputs and attention metadata.

Independent of the serving core's types so a test, a calibration sweep and the executor
all build steps the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmplan.runtime.engine.attention import AttnMetadata, PrefillSpan


@dataclass(slots=True)
class SeqWork:
    """One sequence's share of a step."""

    token_ids: list[int]  # the new tokens to compute (decode: exactly one)
    context_len: int  # tokens already in the cache
    block_ids: list[int]  # the sequence's block table (must cover context + new tokens)
    is_prefill: bool
    sample: bool  # whether this step produces the sequence's next token


@dataclass(slots=True)
class StepInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    meta: AttnMetadata
    logits_index: torch.Tensor  # [S] rows of the flattened batch that sample
    order: list[int]  # order[k] = index in the caller's list of the k-th sampled sequence


# A decode group costs a few kernel launches per layer (two gathers, one attention call):
# about what gathering and attending to this many padded key rows costs on a CPU.
GROUP_COST_ROWS = 1024
MAX_GROUP_RUNS = 24


def decode_groups(lens: list[int], block_size: int) -> tuple[tuple[int, int, int], ...]:
    """Split decode rows, sorted by length descending, into ``(row_start, row_end, length)``
    groups that minimise padded key rows plus :data:`GROUP_COST_ROWS` per group.

    One padded gather over a batch whose contexts range from 32 to 512 tokens reads and
    attends to ``D * 512`` rows; grouping by length reads close to ``sum(lens)``.
    """
    padded = [-(-n // block_size) * block_size for n in lens]
    # Rows with the same padded length always share a group: the search runs over runs of them.
    starts = [r for r in range(len(lens)) if r == 0 or padded[r] != padded[r - 1]] + [len(lens)]
    m = len(starts) - 1
    best = [0.0] + [float("inf")] * m  # best[j]: cost of the rows before run j
    cut = [0] * (m + 1)
    for j in range(1, m + 1):
        # runs [i, j) in one group, its longest row opening run i; a group spans at most
        # MAX_GROUP_RUNS runs so the search stays linear in the batch size
        for i in range(max(0, j - MAX_GROUP_RUNS), j):
            c = best[i] + (starts[j] - starts[i]) * padded[starts[i]] + GROUP_COST_ROWS
            if c < best[j]:
                best[j], cut[j] = c, i
    out: list[tuple[int, int, int]] = []
    j = m
    while j > 0:
        i = cut[j]
        out.append((starts[i], starts[j], lens[starts[i]]))
        j = i
    return tuple(reversed(out))


def build_step_inputs(work: list[SeqWork], block_size: int, device: torch.device) -> StepInputs:
    decode = [i for i, w in enumerate(work) if not w.is_prefill]
    prefill = [i for i, w in enumerate(work) if w.is_prefill]
    ids: list[int] = []
    pos: list[int] = []
    slots: list[int] = []
    logits_rows: list[int] = []
    order: list[int] = []

    def add(i: int) -> int:
        w = work[i]
        start = len(ids)
        n = len(w.token_ids)
        need = -(-(w.context_len + n) // block_size)
        if len(w.block_ids) < need:
            raise ValueError(
                f"sequence {i} needs {need} KV blocks for {w.context_len + n} tokens, has {len(w.block_ids)}"
            )
        ids.extend(w.token_ids)
        for p in range(w.context_len, w.context_len + n):
            pos.append(p)
            slots.append(w.block_ids[p // block_size] * block_size + p % block_size)
        if w.sample:
            logits_rows.append(start + n - 1)
            order.append(i)
        return start

    # Longest context first, so sequences of similar length sit in contiguous rows that the
    # attention gathers group by group (see decode_groups).
    decode.sort(key=lambda i: -work[i].context_len)
    for i in decode:
        add(i)
    d = len(decode)
    dec_tables = dec_mask = None
    dec_len = 0
    groups: tuple[tuple[int, int, int], ...] = ()
    if d:
        lens = [work[i].context_len + 1 for i in decode]
        dec_len = max(lens)
        groups = decode_groups(lens, block_size)
        nb = -(-dec_len // block_size)
        table = torch.zeros((d, nb), dtype=torch.long)
        for r, i in enumerate(decode):
            blocks = work[i].block_ids[: -(-lens[r] // block_size)]
            table[r, : len(blocks)] = torch.tensor(blocks, dtype=torch.long)
        dec_tables = table.to(device)
        if d > 1 and min(lens) != dec_len:
            lt = torch.tensor(lens).unsqueeze(1)
            dec_mask = (torch.arange(dec_len).unsqueeze(0) < lt).view(d, 1, 1, dec_len).to(device)
    spans: list[PrefillSpan] = []
    for i in prefill:
        w = work[i]
        start = add(i)
        n = len(w.token_ids)
        need = -(-(w.context_len + n) // block_size)
        spans.append(
            PrefillSpan(
                start, n, w.context_len, torch.tensor(w.block_ids[:need], dtype=torch.long, device=device)
            )
        )
    meta = AttnMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
        num_decode=d,
        decode_block_tables=dec_tables,
        decode_mask=dec_mask,
        decode_len=dec_len,
        decode_groups=groups,
        prefills=spans,
    )
    # The caller's order of sampled sequences: decode first, then prefill, as flattened.
    return StepInputs(
        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
        positions=torch.tensor(pos, dtype=torch.long, device=device),
        meta=meta,
        logits_index=torch.tensor(logits_rows, dtype=torch.long, device=device),
        order=order,
    )
