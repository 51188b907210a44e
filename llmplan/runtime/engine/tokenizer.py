"""Tokenizers for the engine, all offline.

* an HF model directory: its own tokenizer (``AutoTokenizer``, local files only);
* ``--dummy-weights`` with a 32000-token vocab: the Mistral-7B v0.1 SentencePiece model that
  ``mistral-common`` ships (Llama-2 style, 32000 ids, BOS 1, EOS 2), so synthetic prompts
  tokenize like real text;
* otherwise a byte-level fallback (ids 3..258 are bytes; 0 pad, 1 BOS, 2 EOS).

Also an incremental detokenizer that emits only complete UTF-8 text and holds back a
possible partial stop string.
"""

from __future__ import annotations

from pathlib import Path

from llmplan.errors import LlmplanError


class ByteTokenizer:
    name = "bytes"
    bos_token_id = 1
    eos_token_id = 2
    _OFFSET = 3

    def __init__(self, vocab_size: int = 259) -> None:
        if vocab_size < 259:
            raise LlmplanError(f"vocab_size {vocab_size} is too small for the byte tokenizer (needs 259)")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        return [b + self._OFFSET for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        data = bytes(i - self._OFFSET for i in ids if self._OFFSET <= i < self._OFFSET + 256)
        return data.decode("utf-8", errors="replace")


class MistralSentencePieceTokenizer:
    """Mistral-7B v0.1's SentencePiece model from the ``mistral-common`` package."""

    name = "mistral-7b-v0.1-sentencepiece"

    def __init__(self) -> None:
        try:
            from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

            self._tok = MistralTokenizer.v1().instruct_tokenizer.tokenizer
        except ImportError as e:
            raise LlmplanError(
                "the Mistral tokenizer needs `pip install 'mistral-common[sentencepiece]'` "
                "(the llmplan[data] extra)"
            ) from e
        self.vocab_size = self._tok.n_words
        self.bos_token_id = self._tok.bos_id
        self.eos_token_id = self._tok.eos_id

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, bos=False, eos=False))

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([i for i in ids if i >= 3])


class HFTokenizer:
    def __init__(self, model_dir: str | Path) -> None:
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise LlmplanError(
                f"cannot load the tokenizer in {model_dir} ({e}); add tokenizer files to it"
            ) from e
        self.name = str(model_dir)
        self.eos_token_id = self._tok.eos_token_id
        self.bos_token_id = self._tok.bos_token_id
        self.vocab_size = len(self._tok)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


def tokenizer_for_dummy(vocab_size: int):
    if vocab_size == 32000:
        try:
            return MistralSentencePieceTokenizer()
        except LlmplanError:
            pass
    return ByteTokenizer(vocab_size)


def load_tokenizer(model_dir: str | Path | None, vocab_size: int):
    if model_dir is not None:
        has_files = any((Path(model_dir) / f).exists() for f in ("tokenizer.json", "tokenizer.model"))
        if has_files:
            return HFTokenizer(model_dir)
    return tokenizer_for_dummy(vocab_size)


class IncrementalDetokenizer:
    """Turns a growing token list into text increments, applying stop strings.

    Decoding the whole output each time is O(n) per token, fine at these lengths and immune
    to tokenizers whose pieces depend on their neighbours (SentencePiece's leading space).
    """

    def __init__(self, tokenizer, stop: list[str]) -> None:
        self._tok = tokenizer
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) - 1 for s in self._stop), default=0)
        self.emitted = 0  # characters of text already streamed
        self.text = ""

    def update(self, output_ids: list[int], final: bool) -> tuple[str, bool]:
        """New text to stream and whether a stop string ended the output."""
        text = self._tok.decode(output_ids)
        for s in self._stop:
            at = text.find(s, max(0, self.emitted - len(s) + 1))
            if at != -1:
                self.text = text[:at]
                delta = self.text[self.emitted :]
                self.emitted = len(self.text)
                return delta, True
        self.text = text
        safe = len(text)
        if not final:
            if text.endswith("\ufffd"):  # incomplete UTF-8 sequence: wait for the rest
                safe = len(text.rstrip("\ufffd"))
            safe = max(self.emitted, safe - self._hold)
        delta = text[self.emitted : safe]
        self.emitted = safe
        return delta, False
