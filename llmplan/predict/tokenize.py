"""The offline tokenizer that turns reply text into a token count (the label).

Labels are counted with Mistral-7B v0.1's SentencePiece model (32k vocabulary, Llama-2 style),
which ships inside the ``mistral-common`` package and so works without network access. The
choice matters: the Llama-3 tokenizer puts a ShareGPT reply in the same bucket only ~82% of the
time, so every report names :data:`COUNTING_TOKENIZER`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from llmplan.errors import LlmplanError

COUNTING_TOKENIZER = "mistral-7b-v0.1-sentencepiece (mistral-common tokenizer.model.v1)"

TokenCounter = Callable[[Sequence[str]], list[int]]


@functools.cache
def _sentencepiece():
    try:
        import mistral_common
        from mistral_common.tokens.tokenizers.sentencepiece import SentencePieceTokenizer
    except ImportError:
        raise LlmplanError(
            "counting tokens needs the mistral-common package; install it with `pip install 'llmplan[data]'`"
        ) from None
    path = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not path.is_file():
        raise LlmplanError(f"{path} is missing; reinstall mistral-common (`pip install -U mistral-common`)")
    # The raw SentencePiece processor batches in C++; the wrapper's encode() goes one string at a time.
    return SentencePieceTokenizer(str(path))._model


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Token count per text (no BOS/EOS) with :data:`COUNTING_TOKENIZER`."""
    if not texts:
        return []
    return [len(ids) for ids in _sentencepiece().encode(list(texts))]
