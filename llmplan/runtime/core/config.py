"""The scheduler's settings and counters: :class:`SchedulerConfig` (one instance's limits),
:func:`serving_config` (the one rule that turns engine arguments into it, for the engine and
the simulator) and :class:`SchedulerStats`."""

from __future__ import annotations

from dataclasses import dataclass

from llmplan.roles import Role


@dataclass(slots=True)
class SchedulerConfig:
    num_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    # Token budget per step (prefill chunk tokens + one per decode). Without chunked prefill,
    # a prompt longer than the budget still runs, alone among prefills, as in vLLM.
    max_num_batched_tokens: int = 8192
    chunked_prefill: bool = False
    # Share of blocks admission keeps free so running sequences can grow (vLLM: 1%).
    watermark: float = 0.01
    # Longest sequence (prompt + output); None = the KV capacity. A sequence reaching it stops
    # with finish_reason "max_model_len", so one sequence alone can always run to completion.
    max_model_len: int | None = None
    # "prefill": a sequence leaves after its first token (P/D disaggregation hand-off);
    # "decode": sequences may arrive with their KV (``transferred_tokens``).
    role: Role = "both"
    record_token_times: bool = False
    # GPU-resident prefix cache in the block manager (vLLM's automatic prefix caching).
    enable_prefix_caching: bool = False
    # Place each sequence's blocks at consecutive ids where possible (ContiguousBlockManager):
    # the torch engine's attention then reads a sequence's KV as one slice of the pool. Only
    # block ids change, never counts: the simulator keeps the cheaper stack (False).
    contiguous_blocks: bool = False

    def __post_init__(self) -> None:
        if self.num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive (got {self.num_blocks}); give the KV pool memory")
        if self.block_size <= 0 or self.max_num_seqs <= 0 or self.max_num_batched_tokens <= 0:
            raise ValueError("block_size, max_num_seqs and max_num_batched_tokens must be positive")
        cap = self.num_blocks * self.block_size
        if self.max_model_len is None or self.max_model_len > cap:
            self.max_model_len = cap


def serving_config(
    *,
    num_blocks: int,
    block_size: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    chunked_prefill: bool,
    max_model_len: int | None,
    static: bool,
    role: Role = "both",
    record_token_times: bool = False,
    watermark: float = 0.01,
    enable_prefix_caching: bool = False,
    contiguous_blocks: bool = False,
) -> SchedulerConfig:
    """The scheduler settings a serving instance runs with, from its engine arguments: one
    rule for the engine (``llmplan.runtime.factory``) and the simulator. A static
    policy runs whole batches (no chunked prefill), and the token budget holds at least one
    decode token per sequence."""
    return SchedulerConfig(
        num_blocks=num_blocks,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max(max_num_batched_tokens, max_num_seqs),
        chunked_prefill=chunked_prefill and not static,
        watermark=watermark,
        max_model_len=max_model_len,
        role=role,
        record_token_times=record_token_times,
        enable_prefix_caching=enable_prefix_caching,
        contiguous_blocks=contiguous_blocks,
    )


@dataclass(slots=True)
class SchedulerStats:
    admitted: int = 0
    finished: int = 0
    rejected: int = 0
    aborted: int = 0
    handoffs: int = 0
    preemptions: int = 0
    # Preemptions forced by a sequence that had outgrown its predicted length.
    misprediction_preemptions: int = 0
    mispredictions: int = 0  # sequences that generated more than predicted (underestimates)
    padding_tokens: int = 0  # = prompt_padding_tokens + decode_padding_tokens
    prompt_padding_tokens: int = 0  # static batches: prompts padded to the longest
    decode_padding_tokens: int = 0  # static batches: finished members' idle decode slots
    steps: int = 0
    prefill_tokens: int = 0  # includes recomputed tokens
    recompute_tokens: int = 0
    decode_tokens: int = 0
    # Prompt tokens a prefix probe promised at admission: never scheduled, never budgeted.
    cached_prefix_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}
