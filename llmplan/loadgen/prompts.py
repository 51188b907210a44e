"""Token-id prompts of exactly the lengths a trace asks for.

Traces such as Azure's carry token counts, not text. Sending token ids (the
``/v1/completions`` ``prompt`` may be a list of ints, in vLLM and in llmplan serve)
makes the prompt length exact: no tokenizer round trip can add or merge tokens.

Ids are drawn from the middle of the vocabulary. Special tokens sit at the ends in
every common family (Llama-2/Mistral: 0-2 and byte fallbacks 3-258 at the start;
Llama-3 and Qwen2: control tokens above 128000/151643), so the middle holds ordinary
subwords and no prompt contains an accidental BOS/EOS.

Requests that share ``prefix_id`` share their first ``prefix_tokens`` ids, so a server
with prefix caching sees the reuse the trace describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmplan.workload.types import RequestSpec

# Smallest vocabulary among common LLM families (Llama-2, Mistral); used when the server
# does not say its own.
DEFAULT_VOCAB = 32000


@dataclass
class PromptSynthesizer:
    vocab_size: int = DEFAULT_VOCAB
    seed: int = 0
    _prefixes: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.vocab_size < 16:
            raise ValueError(f"vocab_size {self.vocab_size} is too small to synthesize prompts")
        self.low = self.vocab_size // 10
        self.high = max(self.low + 1, self.vocab_size // 2)

    def _draw(self, key: tuple[int, ...], n: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, *key))
        return rng.integers(self.low, self.high, size=n, dtype=np.int64)

    def prompt(self, spec: RequestSpec) -> list[int]:
        n = spec.prompt_tokens
        if n < 1:
            raise ValueError(f"request {spec.rid} has {n} prompt tokens; a prompt needs at least one")
        if spec.token_ids is not None:
            return self._exact(spec.token_ids)
        body = self._draw((1, spec.rid), n)
        if spec.prefix_id is not None and spec.prefix_tokens > 0:
            k = min(spec.prefix_tokens, n)
            prefix = self._prefixes.get(spec.prefix_id)
            if prefix is None or len(prefix) < k:
                prefix = self._draw((2, spec.prefix_id), max(k, 0 if prefix is None else len(prefix)))
                self._prefixes[spec.prefix_id] = prefix
            body[:k] = prefix[:k]
        return body.tolist()

    def _exact(self, ids: object) -> list[int]:
        """The workload's own token ids; ids beyond this server's vocabulary are folded into
        [low, high) by one fixed map, so prompts that share a prefix still share it."""
        arr = np.asarray(ids, dtype=np.int64)
        if len(arr) and (arr.max() >= self.vocab_size or arr.min() < 0):
            arr = self.low + np.abs(arr) % (self.high - self.low)
        return arr.tolist()
