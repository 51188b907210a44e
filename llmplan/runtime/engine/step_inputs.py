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


def _first_if_consecutive(block_ids: list[int], n: int) -> int:
    """The first of ``block_ids[:n]`` when they are consecutive ids (one slice of the pool),
    else -1."""
    b0 = block_ids[0]
    return b0 if block_ids[n - 1] - b0 == n - 1 and block_ids[:n] == list(range(b0, b0 + n)) else -1


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

    for i in decode:
        add(i)
    d = len(decode)
    dec_tables = None
    lens = [work[i].context_len + 1 for i in decode]
    starts: tuple[int, ...] = ()
    if d:
        nb = -(-max(lens) // block_size)
        table = torch.zeros((d, nb), dtype=torch.long)
        for r, i in enumerate(decode):
            blocks = work[i].block_ids[: -(-lens[r] // block_size)]
            table[r, : len(blocks)] = torch.tensor(blocks, dtype=torch.long)
        dec_tables = table.to(device)
        starts = tuple(_first_if_consecutive(work[i].block_ids, -(-lens[r] // block_size))
                       for r, i in enumerate(decode))
    spans: list[PrefillSpan] = []
    for i in prefill:
        w = work[i]
        start = add(i)
        n = len(w.token_ids)
        need = -(-(w.context_len + n) // block_size)
        spans.append(
            PrefillSpan(
                start, n, w.context_len, torch.tensor(w.block_ids[:need], dtype=torch.long, device=device),
                first_block=_first_if_consecutive(w.block_ids, need),
            )
        )
    meta = AttnMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
        num_decode=d,
        decode_block_tables=dec_tables,
        decode_lens=tuple(lens),
        decode_starts=starts,
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
